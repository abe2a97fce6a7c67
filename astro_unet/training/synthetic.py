# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Realistic noiseless sky scenes for training, rendered with GalSim.

Stars with HST-like or ground-based PSFs, galaxies, clusters, nebulae and
sky, rendered fast from cached PSF kernels.  Why GalSim, what the scenes
hold and how they are rendered quickly: :ref:`synthetic_scenes`.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass, fields

import numpy as np
from astropy.table import Table
from scipy import signal

__all__ = ["INSTRUMENTS", "SceneConfig", "render_scene", "pure_sky_scene"]

# pytest-doctestplus: these examples need the optional GalSim
__doctest_requires__ = {("render_scene",): ["galsim"]}

#: Instruments known to `render_scene`: pixel scale (arcsec) and PSF kind.
INSTRUMENTS = {
    "wfc3_uvis": {"pixel_scale": 0.04, "psf": "hst"},
    "acs_wfc": {"pixel_scale": 0.05, "psf": "hst"},
    "ground": {"pixel_scale": 0.26, "psf": "ground"},
}

_OVERSAMPLE = 4          # PSF oversampling (phases per pixel and axis)
_GAL_OVERSAMPLE = 3      # galaxy stamp supersampling
_HST_DIAMETER = 2.4      # m
_HST_OBSCURATION = 0.33  # linear fraction (secondary mirror)
_PSF_CACHE = OrderedDict()
_PSF_CACHE_SIZE = 64


def _import_galsim():
    try:
        import galsim
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Synthetic scenes need GalSim: pip install 'astro_unet[train]' "
            "(or pip install galsim)."
        ) from None
    return galsim


@dataclass(frozen=True)
class SceneConfig:
    """
    Every random choice of a synthetic scene: ranges drawn from per scene.

    Counts are per 256x256 pixels (scaled with the image area); fluxes are
    in electron/s; ``(low, high)`` ranges of counts and levels are drawn
    log-uniformly.  Use `SceneConfig.for_instrument` for defaults suited to
    an instrument, and `dataclasses.replace` to change fields.

    Parameters
    ----------
    instrument : str
        A key of `INSTRUMENTS`: ``"wfc3_uvis"``, ``"acs_wfc"`` or ``"ground"``.
    pixel_scale : float or None
        Arcsec per pixel (None: the instrument's).
    n_stars : tuple of float
        Field stars per 256x256 pixels.
    star_flux : tuple of float
        Smallest and largest star flux (e-/s).
    star_slope : float
        :math:`\\gamma` of the cumulative counts :math:`N(>F) \\propto F^{-\\gamma}`.
    n_galaxies : tuple of float
        Galaxies per 256x256 pixels (0 allowed).
    galaxy_flux : tuple of float
        Smallest and largest galaxy flux (e-/s).
    galaxy_slope : float
        :math:`\\gamma` of the galaxy counts.
    sersic_n : tuple of float
        Range of Sersic indices (log-uniform).
    hlr_median : float
        Median half-light radius (arcsec) of a galaxy of flux ``hlr_flux``.
    hlr_flux : float
        Reference flux (e-/s) for ``hlr_median``; radii scale as flux**0.3.
    hlr_scatter_dex : float
        Log-normal scatter of the radii (dex).
    hlr_range : tuple of float
        Limits of the half-light radius (arcsec).
    min_axis_ratio : float
        Smallest galaxy axis ratio b/a.
    cluster_probability : float
        Chance that a scene contains a star cluster.
    cluster_stars : tuple of float
        Number of cluster stars.
    cluster_core : tuple of float
        King core radius (pixels).
    cluster_concentration : tuple of float
        Tidal / core radius.
    nebula_probability : float
        Chance of diffuse nebular emission.
    nebula_level : tuple of float
        Peak surface brightness of the nebula (e-/s per pixel).
    nebula_slope : tuple of float
        Power-spectrum slope :math:`\\beta` of the nebula field, :math:`P \\propto k^{-\\beta}`.
    background : tuple of float
        Sky level (e-/s per pixel); ``(0, 0)`` for none.
    background_gradient : float
        Largest fractional change of the sky across the image.
    wavelength : tuple of float
        Effective wavelength range (nm) for the HST PSF.
    aberration_rms : float
        Rms (waves) of the random Zernike aberrations (2 fixed sets per
        instrument, so that PSFs can be cached; the wavelength is rounded to
        50 nm and the spider is at 0 or 22.5 degrees, turned by a random
        multiple of 90 degrees).
    seeing : tuple of float
        FWHM range (arcsec) of the ground-based PSF.
    moffat_probability : float
        Chance of a Moffat (else Kolmogorov) ground-based PSF.
    psf_size : int
        Side of the PSF kernel in pixels (odd).  The PSF is tapered to zero
        over the outer quarter of the radius and renormalised (the far wings
        of very bright stars are dropped).
    edge_margin : int
        Objects are placed at least this many pixels from the edges.
    """

    instrument: str = "wfc3_uvis"
    pixel_scale: float | None = None
    n_stars: tuple = (10.0, 400.0)
    star_flux: tuple = (0.3, 3.0e5)
    star_slope: float = 0.6
    n_galaxies: tuple = (3.0, 60.0)
    galaxy_flux: tuple = (0.3, 3.0e4)
    galaxy_slope: float = 0.8
    sersic_n: tuple = (0.5, 4.0)
    hlr_median: float = 0.3
    hlr_flux: float = 100.0
    hlr_scatter_dex: float = 0.2
    hlr_range: tuple = (0.04, 2.0)
    min_axis_ratio: float = 0.2
    cluster_probability: float = 0.3
    cluster_stars: tuple = (200.0, 3000.0)
    cluster_core: tuple = (2.0, 25.0)
    cluster_concentration: tuple = (5.0, 50.0)
    nebula_probability: float = 0.3
    nebula_level: tuple = (0.01, 1.0)
    nebula_slope: tuple = (2.5, 4.0)
    background: tuple = (0.001, 0.3)
    background_gradient: float = 0.2
    wavelength: tuple = (550.0, 800.0)
    aberration_rms: float = 0.03
    seeing: tuple = (0.7, 2.0)
    moffat_probability: float = 0.5
    psf_size: int = 129
    edge_margin: int = 0

    def __post_init__(self):
        if self.instrument not in INSTRUMENTS:
            raise ValueError(
                f"Unknown instrument {self.instrument!r}; use one of {sorted(INSTRUMENTS)}."
            )
        if self.psf_size < 5 or self.psf_size % 2 == 0:
            raise ValueError(f"psf_size must be odd and >= 5, got {self.psf_size}.")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"{f.name} must be a (low, high) pair, got {value!r}.")

    @classmethod
    def for_instrument(cls, instrument="wfc3_uvis", **overrides):
        """
        Defaults suited to ``instrument``, with ``overrides`` applied.

        Parameters
        ----------
        instrument : str
            ``"wfc3_uvis"``, ``"acs_wfc"`` or ``"ground"``.
        **overrides
            Any field of `SceneConfig`.

        Returns
        -------
        config : SceneConfig

        Examples
        --------
        >>> from astro_unet.training import SceneConfig
        >>> SceneConfig.for_instrument("ground").background
        (5.0, 300.0)
        """
        if instrument == "ground":
            base = dict(star_flux=(3.0, 3.0e6), galaxy_flux=(3.0, 3.0e5), hlr_flux=1000.0,
                        background=(5.0, 300.0), nebula_level=(0.5, 100.0), psf_size=41,
                        cluster_core=(1.0, 10.0), hlr_range=(0.1, 5.0))
        elif instrument == "acs_wfc":
            base = dict(wavelength=(600.0, 850.0))
        else:
            base = {}
        base.update(overrides)
        return cls(instrument=instrument, **base)

    @property
    def scale(self):
        """Pixel scale in arcsec (the instrument's when not set)."""
        if self.pixel_scale is not None:
            return float(self.pixel_scale)
        return INSTRUMENTS[self.instrument]["pixel_scale"]


# ---------------------------------------------------------------------------
# PSF
# ---------------------------------------------------------------------------

def _aberrations(instrument, index, rms):
    """Fixed Zernike set ``index`` (defocus, astig, coma) for an instrument."""
    seed = [sum(map(ord, instrument)), int(index)]
    coeffs = np.random.default_rng(seed).normal(0.0, rms, 5)
    keys = ("defocus", "astig1", "astig2", "coma1", "coma2")
    return dict(zip(keys, (float(c) for c in coeffs)))


def _oversampled_psf(key, scale, size):
    """4x oversampled, point-sampled PSF image (cached); sums to 1."""
    full_key = key + (round(float(scale), 6), int(size))
    cached = _PSF_CACHE.get(full_key)
    if cached is not None:
        _PSF_CACHE.move_to_end(full_key)
        return cached
    galsim = _import_galsim()
    kind = key[0]
    if kind == "hst":
        _, instrument, lam, strut, ab_index, rms = key
        aber = _aberrations(instrument, ab_index, rms)
        # a broad-band filter: three wavelengths across +-10 % smear the rings
        psf = galsim.Add([
            galsim.OpticalPSF(
                lam=lam * f, diam=_HST_DIAMETER, obscuration=_HST_OBSCURATION, nstruts=4,
                strut_thick=0.04, strut_angle=strut * galsim.degrees,
                scale_unit=galsim.arcsec, **{k: v / f for k, v in aber.items()})
            for f in (0.9, 1.0, 1.1)
        ]) / 3.0
        # charge diffusion and pointing jitter: a Gaussian of 0.3 pixel
        psf = galsim.Convolve(psf, galsim.Gaussian(sigma=0.3 * scale))
    elif kind == "kolmogorov":
        psf = galsim.Kolmogorov(fwhm=key[1])
    else:
        psf = galsim.Moffat(beta=key[2], fwhm=key[1], trunc=4.0 * key[1])
    n = _OVERSAMPLE * size
    image = psf.drawImage(nx=n, ny=n, scale=scale / _OVERSAMPLE, method="no_pixel").array
    image = np.clip(image, 0.0, None).astype(np.float64)
    # circular taper over the outer quarter: no square edge around bright stars
    c = (n - 1) / 2.0
    r = np.hypot(*np.meshgrid(np.arange(n) - c, np.arange(n) - c, indexing="ij")) / (n / 2.0)
    image *= np.cos(0.5 * np.pi * np.clip((r - 0.75) / 0.25, 0.0, 1.0)) ** 2
    image = (image / image.sum()).astype(np.float32)
    image.flags.writeable = False
    _PSF_CACHE[full_key] = image
    while len(_PSF_CACHE) > _PSF_CACHE_SIZE:
        _PSF_CACHE.popitem(last=False)
    return image


def _phase_kernels(over, size):
    """
    Pixel-integrated kernels for the 4x4 sub-pixel phases, and a sampled one.

    ``over`` (``4*size`` square, even) has its centre between the four central
    sub-pixels, i.e. at the centre of the central pixel of a ``size`` grid
    (``size`` odd).  Phase ``(qy, qx)`` moves the centre by ``q/4`` pixel.
    """
    o = _OVERSAMPLE
    kernels = np.empty((o, o, size, size))
    padded = np.pad(over.astype(np.float64), ((o, o), (o, o)))
    for qy in range(o):
        for qx in range(o):
            shifted = padded[o - qy:o - qy + o * size, o - qx:o - qx + o * size]
            k = shifted.reshape(size, o, size, o).sum(axis=(1, 3))
            kernels[qy, qx] = k / k.sum()
    # point-sampled at pixel centres (for the pixel-integrated galaxy layer):
    # the mean of the 2x2 central sub-pixels of each pixel
    c = o // 2
    over = np.asarray(over, dtype=np.float64)
    sampled = (over[c - 1::o, c - 1::o] + over[c::o, c::o]
               + over[c - 1::o, c::o] + over[c::o, c - 1::o])
    sampled = sampled / sampled.sum()
    return kernels, sampled


def _draw_psf(config, rng):
    """Choose this scene's PSF; return (phase kernels, sampled kernel, description)."""
    scale = config.scale
    size = int(config.psf_size)
    rot = 0
    if INSTRUMENTS[config.instrument]["psf"] == "hst":
        lam = float(rng.uniform(*config.wavelength))
        lam_q = 50.0 * round(lam / 50.0)
        strut = float(rng.choice([0.0, 22.5]))
        ab_index = int(rng.integers(0, 2))
        rot = int(rng.integers(0, 4))
        key = ("hst", config.instrument, lam_q, strut, ab_index,
               round(float(config.aberration_rms), 4))
        desc = dict(kind="OpticalPSF", wavelength_nm=lam_q, diameter_m=_HST_DIAMETER,
                    obscuration=_HST_OBSCURATION, nstruts=4,
                    strut_angle_deg=(strut + 90.0 * rot) % 90.0,
                    aberrations_waves=_aberrations(config.instrument, ab_index,
                                                   config.aberration_rms))
    else:
        fwhm = round(float(rng.uniform(*config.seeing)), 1)
        if rng.random() < config.moffat_probability:
            beta = float(rng.choice([2.5, 3.5, 4.5]))
            key = ("moffat", fwhm, beta)
            desc = dict(kind="Moffat", beta=beta)
        else:
            key = ("kolmogorov", fwhm)
            desc = dict(kind="Kolmogorov")
    over = _oversampled_psf(key, scale, size)
    if rot:
        over = np.rot90(over, rot)
    kernels, sampled = _phase_kernels(over, size)
    desc["fwhm_arcsec"] = round(_fwhm(kernels[0, 0]) * scale, 4)
    desc["pixel_scale"] = scale
    desc["kernel_size"] = size
    return kernels, sampled, desc


def _fwhm(kernel):
    """FWHM (pixels) from the area above half maximum."""
    area = float((kernel >= 0.5 * kernel.max()).sum())
    return 2.0 * math.sqrt(area / math.pi)


# ---------------------------------------------------------------------------
# Scene ingredients
# ---------------------------------------------------------------------------

def _loguniform(rng, lo, hi, size=None):
    """Log-uniform draw in [lo, hi] (uniform when lo <= 0; lo when lo == hi)."""
    lo, hi = float(lo), float(hi)
    if lo <= 0:
        return rng.uniform(lo, hi, size)
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def _power_law(rng, n, fmin, fmax, gamma):
    """Fluxes with N(>F) ~ F**-gamma between fmin and fmax (truncated Pareto)."""
    u = rng.random(n)
    a = fmin ** -gamma
    b = fmax ** -gamma
    return (a - u * (a - b)) ** (-1.0 / gamma)


def _count(rng, rng_range, area_factor):
    lo, hi = rng_range
    if hi <= 0:
        return 0
    mean = _loguniform(rng, max(lo, 1e-3), hi) * area_factor
    return int(rng.poisson(mean))


def _positions(rng, n, shape, margin):
    ny, nx = shape
    m = min(margin, (min(ny, nx) - 1) // 2)
    y = rng.uniform(m - 0.5, ny - m - 0.5, n)
    x = rng.uniform(m - 0.5, nx - m - 0.5, n)
    return y, x


def _king_radii(rng, n, rc, rt):
    """Radii drawn from a King (1962) surface-density profile."""
    r = np.linspace(0.0, rt, 2048)
    sigma = (1.0 / np.sqrt(1.0 + (r / rc) ** 2) - 1.0 / np.sqrt(1.0 + (rt / rc) ** 2)) ** 2
    cdf = np.cumsum(sigma * r)
    cdf /= cdf[-1]
    return np.interp(rng.random(n), cdf, r)


def _add_stars(image, y, x, flux, kernels):
    """
    Add point sources with the phase kernels; positions rounded to 1/4 pixel.

    Returns the rounded positions and each star's peak pixel value.
    """
    o = _OVERSAMPLE
    size = kernels.shape[-1]
    half = size // 2
    ny, nx = image.shape
    yq = np.round(np.asarray(y) * o) / o
    xq = np.round(np.asarray(x) * o) / o
    iy, ix = np.floor(yq).astype(int), np.floor(xq).astype(int)
    qy = np.round((yq - iy) * o).astype(int)
    qx = np.round((xq - ix) * o).astype(int)
    peak = np.zeros(len(flux))
    pad = 1  # positions down to -0.5 give pixel index -1
    canvas = np.zeros((ny + 2 * pad + size - 1, nx + 2 * pad + size - 1))
    for py in range(o):
        for px in range(o):
            sel = (qy == py) & (qx == px)
            if not sel.any():
                continue
            k = kernels[py, px]
            peak[sel] = flux[sel] * k.max()
            if sel.sum() <= 3:  # direct stamps are cheaper than an FFT
                for j in np.flatnonzero(sel):
                    y0, x0 = iy[j] + pad, ix[j] + pad
                    canvas[y0:y0 + size, x0:x0 + size] += flux[j] * k
                continue
            delta = np.zeros((ny + 2 * pad, nx + 2 * pad))
            np.add.at(delta, (iy[sel] + pad, ix[sel] + pad), flux[sel])
            canvas += signal.fftconvolve(delta, k, mode="full")
    image += canvas[pad + half:pad + half + ny, pad + half:pad + half + nx]
    return yq, xq, peak


def _draw_galaxies(layer, y, x, flux, n_sersic, hlr, q, beta, scale):
    """Sersic galaxies, pixel-integrated, into ``layer`` (before the PSF)."""
    galsim = _import_galsim()
    s = _GAL_OVERSAMPLE
    ny, nx = layer.shape
    for j in range(len(flux)):
        trunc = max(min(6.0 * hlr[j], 100.0 * scale), 2.5 * hlr[j])
        radius = int(math.ceil(trunc / scale)) + 1
        size = 2 * radius + 1
        try:
            gal = galsim.Sersic(n=float(n_sersic[j]), half_light_radius=float(hlr[j]),
                                trunc=trunc, flux_untruncated=False)
        except galsim.GalSimError:
            # GalSim's solver fails for a few (n, trunc/hlr) pairs: use the
            # untruncated profile; the stamp (radius >= trunc) truncates it
            gal = galsim.Sersic(n=float(n_sersic[j]), half_light_radius=float(hlr[j]))
        gal = gal.shear(q=float(q[j]), beta=float(beta[j]) * galsim.radians)
        cy, cx = int(round(y[j])), int(round(x[j]))
        offset = (s * (x[j] - cx), s * (y[j] - cy))
        stamp = gal.drawImage(nx=s * size, ny=s * size, scale=scale / s, offset=offset,
                              method="no_pixel").array
        stamp = stamp.reshape(size, s, size, s).sum(axis=(1, 3))
        stamp = np.clip(stamp, 0.0, None)
        stamp *= flux[j] / stamp.sum()       # exact flux (cusp sampling error removed)
        y0, x0 = cy - radius, cx - radius
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + size, ny), min(x0 + size, nx)
        if ye > ys and xe > xs:
            layer[ys:ye, xs:xe] += stamp[ys - y0:ye - y0, xs - x0:xe - x0]


def _nebula(shape, rng, level, slope):
    """Log-normal Gaussian random field with P(k) ~ k**-slope, in a smooth envelope."""
    ny, nx = shape
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.rfftfreq(nx)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = np.inf
    amp = k ** (-slope / 2.0)
    noise = rng.normal(size=(ny, nx // 2 + 1)) + 1j * rng.normal(size=(ny, nx // 2 + 1))
    field_ = np.fft.irfft2(noise * amp, s=(ny, nx))
    field_ = (field_ - field_.mean()) / field_.std()
    lognormal = np.exp(float(rng.uniform(0.5, 1.2)) * field_)
    yy, xx = np.mgrid[0:ny, 0:nx]
    cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
    width = rng.uniform(0.3, 1.0) * max(ny, nx)
    envelope = np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / width ** 2)
    neb = lognormal * envelope
    return neb * (level / neb.max())


def _background(shape, rng, config):
    lo, hi = config.background
    if hi <= 0:
        return np.zeros(shape), dict(level=0.0, gradient_x=0.0, gradient_y=0.0)
    level = float(_loguniform(rng, max(lo, 1e-6), hi))
    g = config.background_gradient
    gy, gx = rng.uniform(-g, g, 2) / 2.0
    ny, nx = shape
    yy = (np.arange(ny) - (ny - 1) / 2.0)[:, None] / max(ny, 1)
    xx = (np.arange(nx) - (nx - 1) / 2.0)[None, :] / max(nx, 1)
    plane = level * (1.0 + 2.0 * gy * yy + 2.0 * gx * xx)
    return np.clip(plane, 0.0, None), dict(level=level, gradient_x=float(2 * gx),
                                           gradient_y=float(2 * gy))


def _resolve(shape, instrument, config, rng, seed):
    if np.ndim(shape) == 0:
        shape = (int(shape), int(shape))
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be two positive integers, got {shape!r}.")
    if config is None:
        config = SceneConfig.for_instrument(instrument or "wfc3_uvis")
    elif not isinstance(config, SceneConfig):
        raise TypeError(f"config must be a SceneConfig, got {type(config).__name__}.")
    elif instrument is not None and instrument != config.instrument:
        raise ValueError(
            f"instrument={instrument!r} contradicts config.instrument={config.instrument!r}."
        )
    if rng is not None and seed is not None:
        raise ValueError("Give rng or seed, not both.")
    rng = np.random.default_rng(rng if rng is not None else seed)
    return shape, config, rng


def render_scene(shape, *, instrument=None, config=None, rng=None, seed=None):
    """
    Render a realistic noiseless sky scene in electron/s.

    Stars (field and, sometimes, a King-profile cluster) with the
    instrument's PSF, Sersic galaxies convolved with the same PSF, sometimes
    diffuse nebular emission, and a sky plane with a gradient.  All choices
    are drawn from the ranges of ``config`` (see `SceneConfig`).

    Parameters
    ----------
    shape : int or tuple of int
        Image shape ``(ny, nx)`` (an int gives a square).
    instrument : {"wfc3_uvis", "acs_wfc", "ground"}, optional
        Instrument whose defaults are used when ``config`` is None
        (default ``"wfc3_uvis"``).
    config : SceneConfig, optional
        Every range the scene is drawn from.
    rng : `numpy.random.Generator` or int, optional
        Random generator (or seed).
    seed : int, optional
        Seed, instead of ``rng``.

    Returns
    -------
    truth : `numpy.ndarray`
        float32 image in electron/s, all values >= 0.
    info : dict
        ``instrument``, ``pixel_scale``, ``psf`` (description), ``stars``
        (`~astropy.table.Table`: ``x``, ``y`` (0-based pixel, x = column),
        ``flux`` (e-/s), ``peak`` (e-/s in the brightest pixel), ``cluster``),
        ``galaxies`` (``x``, ``y``, ``flux``, ``sersic_n``, ``hlr_arcsec``,
        ``axis_ratio``, ``position_angle``), ``cluster`` (dict or None),
        ``nebula_flux``, ``background`` (``level``, ``gradient_x``,
        ``gradient_y``), ``total_flux`` (stars + galaxies + nebula + sky,
        e-/s, before losses at the edges).

    Raises
    ------
    ImportError
        GalSim is not installed.
    ValueError
        Bad shape, instrument or ``rng``/``seed`` given together.

    Examples
    --------
    >>> from astro_unet.training import render_scene
    >>> truth, info = render_scene((64, 64), instrument="wfc3_uvis", seed=1)
    >>> truth.shape, truth.dtype, bool(truth.min() >= 0)
    ((64, 64), dtype('float32'), True)
    >>> info["psf"]["kind"], info["pixel_scale"]
    ('OpticalPSF', 0.04)
    """
    shape, config, rng = _resolve(shape, instrument, config, rng, seed)
    ny, nx = shape
    area = ny * nx / 256.0 ** 2
    scale = config.scale
    kernels, sampled, psf_desc = _draw_psf(config, rng)
    margin = int(config.edge_margin)

    # stars: field + optional cluster
    n_field = _count(rng, config.n_stars, area)
    sy, sx = _positions(rng, n_field, shape, margin)
    sflux = _power_law(rng, n_field, *config.star_flux, config.star_slope)
    in_cluster = np.zeros(n_field, bool)
    cluster = None
    if rng.random() < config.cluster_probability:
        n_cl = _count(rng, config.cluster_stars, 1.0)
        rc = float(_loguniform(rng, *config.cluster_core))
        rt = rc * float(_loguniform(rng, *config.cluster_concentration))
        cy, cx = _positions(rng, 1, shape, margin)
        r = _king_radii(rng, n_cl, rc, rt)
        phi = rng.uniform(0, 2 * np.pi, n_cl)
        y_cl, x_cl = cy[0] + r * np.sin(phi), cx[0] + r * np.cos(phi)
        m = min(margin, (min(ny, nx) - 1) // 2)
        keep = ((y_cl >= m - 0.5) & (y_cl < ny - m - 0.5)
                & (x_cl >= m - 0.5) & (x_cl < nx - m - 0.5))
        y_cl, x_cl = y_cl[keep], x_cl[keep]
        f_cl = _power_law(rng, len(y_cl), config.star_flux[0],
                          config.star_flux[1] / 10.0, config.star_slope + 0.2)
        cluster = dict(x=float(cx[0]), y=float(cy[0]), core_radius=rc, tidal_radius=rt,
                       n_stars=int(len(y_cl)))
        sy, sx = np.concatenate([sy, y_cl]), np.concatenate([sx, x_cl])
        sflux = np.concatenate([sflux, f_cl])
        in_cluster = np.concatenate([in_cluster, np.ones(len(y_cl), bool)])

    truth = np.zeros(shape)
    sy, sx, peak = _add_stars(truth, sy, sx, sflux, kernels)

    # galaxies
    n_gal = _count(rng, config.n_galaxies, area)
    gy, gx = _positions(rng, n_gal, shape, margin)
    gflux = _power_law(rng, n_gal, *config.galaxy_flux, config.galaxy_slope)
    g_n = _loguniform(rng, *config.sersic_n, n_gal) if n_gal else np.zeros(0)
    hlr = config.hlr_median * (gflux / config.hlr_flux) ** 0.3 * 10 ** (
        rng.normal(0.0, config.hlr_scatter_dex, n_gal))
    hlr = np.clip(hlr, *config.hlr_range)
    q = rng.uniform(config.min_axis_ratio, 1.0, n_gal)
    pa = rng.uniform(0.0, np.pi, n_gal)
    if n_gal:
        layer = np.zeros(shape)
        _draw_galaxies(layer, gy, gx, gflux, g_n, hlr, q, pa, scale)
        truth += signal.fftconvolve(layer, sampled, mode="same")

    # nebula and sky
    nebula_flux = 0.0
    if rng.random() < config.nebula_probability:
        level = float(_loguniform(rng, *config.nebula_level))
        neb = _nebula(shape, rng, level, float(rng.uniform(*config.nebula_slope)))
        truth += neb
        nebula_flux = float(neb.sum())
    sky, sky_info = _background(shape, rng, config)
    truth += sky

    truth = np.clip(truth, 0.0, None).astype(np.float32)
    stars = Table(dict(x=sx, y=sy, flux=sflux, peak=peak, cluster=in_cluster))
    galaxies = Table(dict(x=gx, y=gy, flux=gflux, sersic_n=g_n, hlr_arcsec=hlr,
                          axis_ratio=q, position_angle=pa))
    info = dict(
        instrument=config.instrument, pixel_scale=scale, psf=psf_desc, stars=stars,
        galaxies=galaxies, cluster=cluster, nebula_flux=nebula_flux, background=sky_info,
        total_flux=float(sflux.sum() + gflux.sum() + nebula_flux + sky.sum()),
    )
    return truth, info


def pure_sky_scene(shape, *, instrument=None, config=None, rng=None, seed=None):
    """
    A scene without sources: the sky plane (with its gradient) only.

    For the hallucination check: a denoiser must not find stars in noise
    drawn from this truth.

    Parameters
    ----------
    shape : int or tuple of int
        Image shape.
    instrument, config, rng, seed
        As for `render_scene` (only the background settings are used).

    Returns
    -------
    truth : `numpy.ndarray`
        float32 sky in electron/s.
    info : dict
        As for `render_scene`, with empty ``stars`` and ``galaxies``.

    Examples
    --------
    >>> from astro_unet.training import pure_sky_scene
    >>> sky, info = pure_sky_scene(32, seed=0)
    >>> len(info["stars"]), bool(abs(sky.mean() - info["background"]["level"]) < 1e-3 * sky.mean())
    (0, True)
    """
    shape, config, rng = _resolve(shape, instrument, config, rng, seed)
    sky, sky_info = _background(shape, rng, config)
    empty_stars = Table(dict(x=np.zeros(0), y=np.zeros(0), flux=np.zeros(0),
                             peak=np.zeros(0), cluster=np.zeros(0, bool)))
    empty_gal = Table(dict(x=np.zeros(0), y=np.zeros(0), flux=np.zeros(0),
                           sersic_n=np.zeros(0), hlr_arcsec=np.zeros(0),
                           axis_ratio=np.zeros(0), position_angle=np.zeros(0)))
    info = dict(instrument=config.instrument, pixel_scale=config.scale, psf=None,
                stars=empty_stars, galaxies=empty_gal, cluster=None, nebula_flux=0.0,
                background=sky_info, total_flux=float(sky.sum()))
    return sky.astype(np.float32), info
