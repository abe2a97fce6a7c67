# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Real training images: the exposure table, noise-based calibration, loading and crops.

The real images the project trains on (``../shared/data``, described by its
``MANIFEST.tsv``) come from many sources: HST drizzled products in
electron/s, ground-based frames in adu, survey coadds in nanomaggy, files
without a header.  Training needs every image in **electrons collected
during the exposure**, so that `~astro_unet.simulate_short_exposure` can
draw Poisson noise at the right level.  The package therefore keeps a small
table, ``exposures.ecsv`` (next to this module; the data are not in the
repository), with one row per image file: unit, exposure time, gain, read
noise, sky, split, and *how each number was obtained* (header keyword,
``NCOMBINE``, or an estimate from the image noise, with the method).

The table is made reproducibly by `make_exposure_table` (command line:
``python -m astro_unet.training.data --make-table DATA_DIR``); the noise
estimators it uses are public here: `measure_noise`,
`estimate_gain_from_noise`.

Table columns
-------------
``path``, ``hdu``
    File (relative to the data directory) and HDU (index or name).
``weight_hdu``
    HDU of a weight map (pixels with weight <= 0 are masked), or ``""``.
``unit``
    Unit of the pixel values, as read or as inferred.
``zero_level``
    Value subtracted from the pixel values first (e.g. a ``PEDESTAL``).
``bias_section``, ``trim_section``
    FITS sections (raw frames): the median of the overscan is subtracted row
    by row (`ccdproc.subtract_overscan`) and the frame trimmed.
``saturation``
    Pixel values (as stored in the file) at or above which pixels are
    masked (saturated or replaced cores); 0 for none.
``exposure_time`` [s], ``exptime_source``
    Exposure time and where it came from.
``gain`` [electron / unit], ``gain_source``
    ``electrons = (data - zero_level) * gain`` for counts-like units, and
    ``* exposure_time`` as well for rate units (``electron/s``: gain 1).
``read_noise`` [electron]
    Effective read noise per pixel of the image (all reads together).
``sky_level`` [electron]
    Background per pixel: present in the image if not ``sky_subtracted``,
    else the level that was subtracted (estimated), which a simulation can
    add back before the Poisson draw (``sky=`` of
    `~astro_unet.simulate_short_exposure`).
``sky_subtracted``
    Whether the background was removed from the pixel values.
``noise_correlation``
    Ratio of the variance of a sum over many pixels to the sum of the
    per-pixel variances (1 for white noise; about 2-4 for drizzled images).
``split``
    ``train``, ``validation``, ``test`` (kept out of training: benchmark
    fields), ``realnoise`` (repeated frames for the real-noise check) or
    ``excluded`` (not usable; ``notes`` says why).
``notes``
    Free text: caveats and cross-checks.
"""

import argparse
import math
import os
import sys
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import mad_std, sigma_clip
from astropy.table import Table
from scipy import ndimage

from .._logging import log_step, set_keyword

__all__ = [
    "EXPOSURE_TABLE_COLUMNS",
    "NoiseStatistics",
    "GainEstimate",
    "measure_noise",
    "estimate_gain_from_noise",
    "default_data_dir",
    "read_exposure_table",
    "make_exposure_table",
    "load_training_image",
    "random_crops",
    "dihedral_augment",
    "RealImageDataset",
]

#: Environment variable naming the directory of real training images.
DATA_DIR_ENV = "ASTRO_UNET_DATA"

#: Column names of the exposure table, in order.
EXPOSURE_TABLE_COLUMNS = (
    "path", "hdu", "weight_hdu", "unit", "zero_level", "bias_section",
    "trim_section", "saturation", "exposure_time", "exptime_source", "gain", "gain_source",
    "read_noise", "sky_level", "sky_subtracted", "noise_correlation", "split",
    "notes",
)

_SPLITS = ("train", "validation", "test", "realnoise", "excluded")


# ---------------------------------------------------------------------------
# Noise measurement
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NoiseStatistics:
    """
    Background noise of an image, measured by `measure_noise`.

    Attributes
    ----------
    background : float
        Median of the background pixels (data units).
    sigma : float
        Per-pixel standard deviation of the noise (data units), from
        differences of pixels 8 apart (uncorrelated even in drizzled images).
    correlation : float
        Noise correlation factor :math:`F = 1 + \\sum \\rho`, the sum of the
        correlation coefficients of the 8 nearest neighbours.  The variance of
        a sum over N pixels is about :math:`N F \\sigma^2`.
    variance : float
        :math:`F \\sigma^2`, the per-pixel variance that adds up like white
        noise over apertures: the one to compare with Poisson statistics.
    n_background : int
        Number of background pixels used.
    """

    background: float
    sigma: float
    correlation: float
    variance: float
    n_background: int


@dataclass(frozen=True)
class GainEstimate:
    """
    Electrons per data unit estimated from the noise (`estimate_gain_from_noise`).

    Attributes
    ----------
    gain : float
        Electrons per data unit.  For an electron/s image this is the
        exposure time in seconds; for nanomaggies an effective gain.
    method : str
        ``"background"`` or ``"photon transfer"``.
    noise : NoiseStatistics
        The background noise that was measured.
    sky_level : float
        Background in electrons per pixel: the level present in the image
        (``"background"``), or the level implied by the noise floor that was
        subtracted (``"photon transfer"``; 0 if none is implied).
    description : str
        One line saying how the value was obtained (for the table).
    """

    gain: float
    method: str
    noise: NoiseStatistics
    sky_level: float
    description: str


def _usable(data, mask):
    good = np.isfinite(data) & (data != 0)
    if mask is not None:
        good &= ~np.asarray(mask, dtype=bool)
    return good


def _highpass(data, good, size=15):
    filled = np.where(good, data, np.median(data[good]))
    return filled - ndimage.median_filter(filled, size=size, mode="reflect")


def _background_mask(data, good, *, nsigma=3.0, grow=2, highpass=None):
    """Pixels free of sources: high-pass < nsigma * noise, grown by ``grow``."""
    if highpass is None:
        highpass = _highpass(data, good)
    clipped = sigma_clip(highpass[good], sigma=3.0, maxiters=10, masked=True)
    sigma = mad_std(clipped.compressed())
    source = (highpass > nsigma * sigma) | ~good
    if grow:
        source = ndimage.binary_dilation(source, iterations=grow)
    return ~source & good


def _robust_variance(values):
    values = values[np.isfinite(values)]
    if values.size < 20:
        return np.nan
    # 4-sigma clipped standard deviation: robust to the odd outlier, unbiased
    # for Gaussian noise (to 0.1 %) and, unlike the MAD, for quantized data
    clipped = sigma_clip(values, sigma=4.0, maxiters=10, stdfunc="mad_std",
                         masked=True).compressed()
    return float(np.var(clipped)) / 0.99893


def _lag_variance(data, bg, dy, dx):
    """Robust variance of data[y+dy, x+dx] - data[y, x] over background pairs."""
    ny, nx = data.shape
    y0, y1 = max(0, -dy), ny - max(0, dy)
    x0, x1 = max(0, -dx), nx - max(0, dx)
    if y1 <= y0 or x1 <= x0:
        return np.nan
    a = data[y0:y1, x0:x1]
    b = data[y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    both = bg[y0:y1, x0:x1] & bg[y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    return _robust_variance((b - a)[both])


def measure_noise(data, *, mask=None, far_lag=8):
    """
    Measure the background noise of an image, allowing for correlated noise.

    Source pixels (high-pass above 3 sigma, grown by 2 pixels), masked,
    non-finite and exactly-zero pixels are excluded, and structure larger than
    15 pixels is removed (median filter) before differencing.  The per-pixel
    variance is half the robust (4-sigma clipped) variance of differences of
    pixels ``far_lag`` apart, which the drizzle kernel does not correlate.
    The correlation coefficient :math:`\\rho` of each of the 8 nearest
    neighbours is one minus the ratio of the neighbour-difference variance
    to the far-difference variance; the
    correlation factor is :math:`F = 1 + \\sum \\rho` (Casertano et al.
    2000 discuss the same factor for drizzled images).  Only lag-1
    correlations are counted: exact for square-kernel drizzling onto a grid
    no finer than the input, an underestimate for wider resampling kernels.

    Parameters
    ----------
    data : array-like
        2-D image.
    mask : array-like of bool, optional
        True for pixels to ignore.
    far_lag : int, optional
        Pixel separation taken as uncorrelated.

    Returns
    -------
    noise : NoiseStatistics

    Raises
    ------
    ValueError
        Fewer than 100 usable background pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.training import measure_noise
    >>> rng = np.random.default_rng(0)
    >>> white = rng.normal(100.0, 2.0, size=(200, 200))
    >>> noise = measure_noise(white)
    >>> round(noise.sigma, 1), round(noise.correlation, 1)
    (2.0, 1.0)
    >>> smooth = (white[:-1, :-1] + white[1:, 1:] + white[1:, :-1] + white[:-1, 1:]) / 4
    >>> round(measure_noise(smooth).correlation)  # a 2x2 box: F = 4
    4
    """
    data = np.asarray(data, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"data must be 2-D, got shape {data.shape}.")
    good = _usable(data, mask)
    if good.sum() < 100:
        raise ValueError("Fewer than 100 usable pixels: cannot measure the noise.")
    highpass = _highpass(data, good)
    bg = _background_mask(data, good, highpass=highpass)
    if bg.sum() < 100:
        raise ValueError("Fewer than 100 background pixels: cannot measure the noise.")
    far = np.nanmean([_lag_variance(highpass, bg, far_lag, 0),
                      _lag_variance(highpass, bg, 0, far_lag)])
    if not np.isfinite(far) or far <= 0:
        raise ValueError("The background has no measurable noise.")
    rho = 0.0
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        near = _lag_variance(highpass, bg, dy, dx)
        rho += 2.0 * (1.0 - near / far)  # the lag and its opposite
    correlation = max(1.0 + rho, 1.0)
    sigma2 = far / 2.0
    return NoiseStatistics(
        background=float(np.median(data[bg])),
        sigma=math.sqrt(sigma2),
        correlation=float(correlation),
        variance=float(sigma2 * correlation),
        n_background=int(bg.sum()),
    )


def _photon_transfer(data, good, noise, *, nbins):
    """Bins of (local mean, residual variance in F*sigma^2 units) for the photon transfer."""
    kernel = np.array([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])
    filled = np.where(good, data, noise.background)
    resid = filled - ndimage.convolve(filled, kernel, mode="reflect")
    local = ndimage.uniform_filter(filled, 5, mode="reflect")
    ok = ndimage.binary_erosion(good, iterations=2)
    bg = _background_mask(data, good) & ok
    # calibration: residual variance per unit of aperture-summing variance
    calib = _robust_variance(resid[bg]) / noise.variance
    level = local[ok]
    res = resid[ok]
    lo, hi = np.percentile(level, [5.0, 99.5])
    inside = (level > lo) & (level < hi)
    edges = np.quantile(level[inside], np.linspace(0.0, 1.0, nbins + 1))
    xs, ys = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (level >= a) & (level < b)
        if sel.sum() < 50:
            continue
        xs.append(float(np.median(level[sel])))
        ys.append(float(mad_std(res[sel])) ** 2 / calib)
    return np.asarray(xs), np.asarray(ys)


def estimate_gain_from_noise(data, *, mask=None, sky_subtracted=False, subtracted_sky=0.0,
                             subtracted_sky_electrons=0.0, read_noise=0.0, method=None,
                             nbins=20):
    r"""
    Estimate electrons per data unit from the noise of a single image.

    Let :math:`k` be the electrons per data unit (for an electron/s image:
    the exposure time in seconds; for nanomaggies an effective gain),
    :math:`B` the background level in the image and :math:`V = F\sigma^2`
    the correlation-corrected background variance per pixel
    (`measure_noise`).  Two methods:

    ``"background"`` (default unless the sky was subtracted and is unknown)
        Poisson statistics of the background plus read noise :math:`R`
        give :math:`V k^2 = (B + s) k + S + R^2`, with :math:`s`
        (``subtracted_sky``, data units) and :math:`S`
        (``subtracted_sky_electrons``) a sky that was removed from the image
        but contributed its photon noise, so

        .. math:: k = \frac{(B+s) + \sqrt{(B+s)^2 + 4V(S+R^2)}}{2V}

        (:math:`k = B/V` when an unsubtracted sky dominates).  Using
        :math:`V` rather than the raw pixel variance matters for drizzled
        images, whose pixel-to-pixel noise is 2-4 times smaller than their
        aperture noise: the raw ratio would overestimate the exposure time
        by that factor.  A sky subtracted but not declared, or a bias offset
        left in :math:`B`, make :math:`k` too small or too large
        respectively; with an undeclared subtracted sky the result is a lower
        bound (fewer electrons assumed: a noisier image).
    ``"photon transfer"`` (sky subtracted, level unknown)
        The image's own sources are used.  In 20 brightness bins of the local
        (5x5) mean :math:`m`, the robust variance of the residual from the
        mean of the 4 neighbours is converted to :math:`V` units with the
        ratio measured on the background, and a robust (Theil-Sen) line
        :math:`V(m) = V_0 + m/k` is fitted.  The sky that was subtracted
        follows from the background variance, :math:`V k^2 - Bk - R^2`
        electrons.  This is rough: source structure (sharp PSF cores,
        cosmic rays, gradients in galaxies) also enters the residual, and few
        pixels rise above a bright sky.  On five synthetic scenes with a
        known 5 e-/unit it returned 4.1 to 8.9; on the project's real images
        it agreed with the background method within about 40 % for the HST
        data, but was 4-14 times too low on the Legacy Survey coadds and
        1.7 times too high on an SDSS frame.  The exposure table therefore
        uses it only as a cross-check.  `ValueError` when the 95 % interval
        of the slope includes zero or the variance grows by less than 25 %
        over the brightness range.

    Parameters
    ----------
    data : array-like
        2-D image in any linear unit.
    mask : array-like of bool, optional
        True for pixels to ignore (zeros and NaN are always ignored).
    sky_subtracted : bool, optional
        Whether the background was removed.  With no ``subtracted_sky*``
        given, selects the photon transfer.
    subtracted_sky : float, optional
        Sky removed from the image, in data units per pixel.
    subtracted_sky_electrons : float, optional
        Sky removed from the image, in electrons per pixel (e.g.
        ``MDRIZSKY x NCOMBINE`` of an HST drizzled product).
    read_noise : float, optional
        Read noise in electrons (all reads together), if known.
    method : {"background", "photon transfer"}, optional
        Force a method.
    nbins : int, optional
        Number of brightness bins for the photon transfer.

    Returns
    -------
    estimate : GainEstimate

    Raises
    ------
    ValueError
        Too few pixels, no background level for the background method, or
        an unconstrained photon transfer.

    Examples
    --------
    A sky of 200 electrons in an image with 4 electrons per unit:

    >>> import numpy as np
    >>> from astro_unet.training import estimate_gain_from_noise
    >>> rng = np.random.default_rng(1)
    >>> image = rng.poisson(200.0, size=(200, 200)) / 4.0
    >>> est = estimate_gain_from_noise(image)
    >>> est.method, bool(abs(est.gain - 4.0) < 0.2), bool(abs(est.sky_level - 200) < 10)
    ('background', True, True)

    The same image with its sky subtracted, the subtracted level known:

    >>> est = estimate_gain_from_noise(image - 50.0, sky_subtracted=True, subtracted_sky=50.0)
    >>> bool(abs(est.gain - 4.0) < 0.2)
    True
    """
    data = np.asarray(data, dtype=float)
    noise = measure_noise(data, mask=mask)
    var = noise.variance
    known = subtracted_sky > 0 or subtracted_sky_electrons > 0
    if method is None:
        method = "photon transfer" if sky_subtracted and not known else "background"
    if method == "background":
        b = noise.background + float(subtracted_sky)
        extra = float(subtracted_sky_electrons) + float(read_noise) ** 2
        if b <= 0 and extra <= 0:
            raise ValueError(
                f"The background level is {noise.background:.4g} <= 0: the sky was "
                "subtracted; give subtracted_sky=... or use the photon transfer."
            )
        b = max(b, 0.0)
        k = (b + math.sqrt(b * b + 4.0 * var * extra)) / (2.0 * var)
        text = (f"background: V k^2 = (B+s) k + S + R^2 with B={noise.background:.4g}, "
                f"sigma={noise.sigma:.4g}, F={noise.correlation:.2f}")
        if subtracted_sky:
            text += f", s={subtracted_sky:.4g}"
        if subtracted_sky_electrons:
            text += f", S={subtracted_sky_electrons:.4g} e-"
        if read_noise:
            text += f", R={read_noise:.3g} e-"
        sky = b * k + float(subtracted_sky_electrons)
        return GainEstimate(gain=float(k), method="background", noise=noise,
                            sky_level=float(sky), description=text)
    if method != "photon transfer":
        raise ValueError(f"Unknown method {method!r}: 'background' or 'photon transfer'.")

    from scipy.stats import theilslopes

    good = _usable(data, mask)
    xs, ys = _photon_transfer(data, good, noise, nbins=nbins)
    if xs.size < 5:
        raise ValueError("Photon transfer: too few pixels in the brightness bins.")
    slope, intercept, slope_lo, slope_hi = theilslopes(ys, xs, alpha=0.95)
    top = slope * (xs.max() - xs.min())
    if not slope_lo > 0 or top < 0.25 * var:
        raise ValueError(
            "Photon transfer: the variance does not grow enough with the signal "
            f"(slope {slope:.3g}, 95 % interval {slope_lo:.3g}..{slope_hi:.3g}); the gain "
            "is not constrained by this image."
        )
    k = 1.0 / slope
    # subtracted sky implied by the background variance: V k^2 = B k + sky + R^2
    sky = max(var * k * k - float(read_noise) ** 2 - noise.background * k, 0.0)
    text = (f"photon transfer: Theil-Sen slope of variance vs signal over {xs.size} bins "
            f"({xs.min():.3g}..{xs.max():.3g}), 95 % interval {1 / slope_hi:.4g}.."
            f"{1 / slope_lo:.4g}, F={noise.correlation:.2f}")
    return GainEstimate(gain=float(k), method="photon transfer", noise=noise,
                        sky_level=float(sky), description=text)


# ---------------------------------------------------------------------------
# The exposure table
# ---------------------------------------------------------------------------

def default_data_dir(data_dir=None):
    """
    Directory of the real training images.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Returned (as a `~pathlib.Path`) when given.

    Returns
    -------
    path : `~pathlib.Path`
        ``data_dir``, else the ``ASTRO_UNET_DATA`` environment variable.

    Raises
    ------
    ValueError
        Neither is set.

    Examples
    --------
    >>> from astro_unet.training import default_data_dir
    >>> default_data_dir("/tmp/mydata").name
    'mydata'
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        raise ValueError(
            f"No data directory: pass data_dir=... or set the {DATA_DIR_ENV} "
            "environment variable to the directory holding the FITS files."
        )
    return Path(data_dir)


def read_exposure_table(path=None):
    """
    Read the exposure table (default: the one shipped with the package).

    Parameters
    ----------
    path : str or path-like, optional
        An ECSV file with the columns of `EXPOSURE_TABLE_COLUMNS`.

    Returns
    -------
    table : `~astropy.table.Table`
        One row per image file; ``exposure_time`` in s, ``read_noise`` and
        ``sky_level`` in electron.  How it was made is in ``table.meta``.

    Raises
    ------
    ValueError
        A required column is missing or a split is unknown.

    Examples
    --------
    >>> from astro_unet.training import read_exposure_table
    >>> table = read_exposure_table()
    >>> sorted(set(table["split"].tolist()))
    ['excluded', 'realnoise', 'test', 'train', 'validation']
    >>> table["exposure_time"].unit
    Unit("s")
    """
    if path is None:
        ref = resources.files("astro_unet.training") / "exposures.ecsv"
        with resources.as_file(ref) as p:
            table = Table.read(p, format="ascii.ecsv")
    else:
        table = Table.read(path, format="ascii.ecsv")
    missing = [c for c in EXPOSURE_TABLE_COLUMNS if c not in table.colnames]
    if missing:
        raise ValueError(f"Exposure table lacks the columns {missing}.")
    bad = sorted(set(table["split"]) - set(_SPLITS))
    if bad:
        raise ValueError(f"Unknown split(s) {bad}; expected one of {_SPLITS}.")
    return table


def _hdu_key(value):
    value = str(value).strip()
    return int(value) if value.lstrip("-").isdigit() else value


def _is_rate(unit):
    unit = u.Unit(unit)
    return unit.is_equivalent(u.electron / u.s) or unit.is_equivalent(u.adu / u.s) \
        or unit.is_equivalent(u.count / u.s)


def _electron_factor(row):
    """Electrons per pixel-value unit for ``row``."""
    factor = float(row["gain"])
    if _is_rate(u.Unit(str(row["unit"]), parse_strict="silent")):
        factor *= float(row["exposure_time"])
    return factor


def _read_raw(row, data_dir):
    path = Path(data_dir) / str(row["path"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        with fits.open(path) as hdul:
            hdu = hdul[_hdu_key(row["hdu"])]
            data = np.array(hdu.data, dtype=np.float64)
            header = hdu.header.copy()
            weight = None
            wkey = str(row["weight_hdu"]).strip()
            if wkey and wkey != "--":
                weight = np.array(hdul[_hdu_key(wkey)].data, dtype=np.float64)
    return data, header, weight


def load_training_image(row, data_dir=None):
    """
    Load one image of the exposure table in electrons.

    The pixel values are converted with the table's calibration:
    ``(data - zero_level)``, overscan subtracted and trimmed when
    ``bias_section``/``trim_section`` are set, times ``gain`` (and times
    ``exposure_time`` for rate units).  Masked: non-finite pixels, pixels
    exactly 0 in the file (drizzle padding, dead pixels), pixels at or above
    ``saturation`` and pixels with weight <= 0 when a weight HDU is given.

    Parameters
    ----------
    row : `~astropy.table.Row` or dict
        A row of `read_exposure_table`.
    data_dir : str or path-like, optional
        Directory the ``path`` column is relative to (default: the
        ``ASTRO_UNET_DATA`` environment variable).

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        Unit electron (the counts collected during ``EXPTIME``); masked
        pixels hold 0.  Header: the file's, plus ``EXPTIME``, ``GAIN`` (1),
        ``RDNOISE``, ``SKYLEVEL``, ``SKYSUB``, ``NOISECOR``, ``SPLIT``.

    Raises
    ------
    ValueError
        No data directory, or the file's unit cannot be converted.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from astro_unet.training import load_training_image
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> fits.writeto(os.path.join(d, "a.fits"), np.full((4, 4), 0.5, "f4"))
    >>> row = dict(path="a.fits", hdu="0", weight_hdu="", unit="electron/s",
    ...            zero_level=0.0, bias_section="", trim_section="", saturation=0.0,
    ...            exposure_time=100.0, gain=1.0, read_noise=3.0, sky_level=0.0,
    ...            sky_subtracted=True, noise_correlation=1.0, split="train")
    >>> ccd = load_training_image(row, d)
    >>> ccd.unit, float(ccd.data[0, 0]), ccd.header["EXPTIME"]
    (Unit("electron"), 50.0, 100.0)
    """
    data_dir = default_data_dir(data_dir)
    data, header, weight = _read_raw(row, data_dir)
    bad = ~np.isfinite(data) | (data == 0)
    if weight is not None:
        bad |= ~(weight > 0)
    saturation = float(row["saturation"])
    if saturation > 0:
        with np.errstate(invalid="ignore"):
            bad |= data >= saturation
    data = data - float(row["zero_level"])
    bias_section = str(row["bias_section"]).strip()
    trim_section = str(row["trim_section"]).strip()
    if bias_section and bias_section != "--":
        import ccdproc

        raw = CCDData(data, unit="adu", mask=bad)
        raw = ccdproc.subtract_overscan(raw, fits_section=bias_section, median=True,
                                        overscan_axis=1, add_keyword=False)
        if trim_section and trim_section != "--":
            raw = ccdproc.trim_image(raw, fits_section=trim_section, add_keyword=False)
        data, bad = np.asarray(raw.data, dtype=float), np.asarray(raw.mask, dtype=bool)
    elif trim_section and trim_section != "--":
        import ccdproc

        raw = ccdproc.trim_image(CCDData(data, unit="adu", mask=bad),
                                 fits_section=trim_section, add_keyword=False)
        data, bad = np.asarray(raw.data, dtype=float), np.asarray(raw.mask, dtype=bool)
    try:
        factor = _electron_factor(row)
    except ValueError as exc:
        raise ValueError(f"{row['path']}: unit {row['unit']!r} not understood ({exc}).") from None
    electrons = np.where(bad, 0.0, data * factor).astype(np.float32)

    for key in ("BUNIT", "BSCALE", "BZERO"):
        header.remove(key, ignore_missing=True, remove_all=True)
    keywords = {
        "EXPTIME": (float(row["exposure_time"]), "[s] exposure time (exposure table)"),
        "GAIN": (1.0, "[e-/e-] data are in electrons"),
        "RDNOISE": (float(row["read_noise"]), "[e-] effective read noise"),
        "SKYLEVEL": (float(row["sky_level"]), "[e-] sky per pixel (present or subtracted)"),
        "SKYSUB": (bool(row["sky_subtracted"]), "sky subtracted from the data"),
        "NOISECOR": (float(row["noise_correlation"]), "aperture/pixel noise variance ratio"),
        "SPLIT": (str(row["split"]), "training split"),
    }
    log_step(header, f"load_training_image({row['path']}, factor={factor:.6g} e-/unit)",
             keywords)
    set_keyword(header, "SRCUNIT", str(row["unit"]), "unit of the file's pixel values")
    return CCDData(electrons, unit=u.electron, mask=bad, meta=header)


# ---------------------------------------------------------------------------
# Crops and augmentation
# ---------------------------------------------------------------------------

def random_crops(image_e, mask=None, *, size, rng, n=1, max_bad_fraction=0.1,
                 max_tries=200):
    """
    Random square crops that are mostly valid data.

    A crop is rejected when more than ``max_bad_fraction`` of its pixels are
    masked, non-finite or exactly zero (the paper rejected crops with more
    than 10 % zeros, the drizzle padding).

    Parameters
    ----------
    image_e : array-like or `~astropy.nddata.CCDData`
        2-D image (its mask is used when ``mask`` is None).
    mask : array-like of bool, optional
        True for bad pixels.
    size : int
        Crop side in pixels (at most the image's smaller side).
    rng : `numpy.random.Generator` or int
        Random generator or seed.
    n : int, optional
        Number of crops.
    max_bad_fraction : float, optional
        Largest accepted fraction of bad pixels per crop.
    max_tries : int, optional
        Attempts per crop before giving up.

    Returns
    -------
    crops : `numpy.ndarray`
        float32 array of shape ``(n, size, size)``.
    masks : `numpy.ndarray`
        bool array of the same shape, True for bad pixels.
    corners : `numpy.ndarray`
        int array ``(n, 2)`` of the (y, x) lower corners.

    Raises
    ------
    ValueError
        The image is smaller than ``size`` or no acceptable crop was found.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.training import random_crops
    >>> img = np.ones((64, 64)); img[:, :40] = 0      # zero padding on the left
    >>> crops, masks, corners = random_crops(img, size=16, rng=0, n=3)
    >>> crops.shape, bool((corners[:, 1] >= 40 - 1).all())
    ((3, 16, 16), True)
    """
    if isinstance(image_e, CCDData):
        if mask is None and image_e.mask is not None:
            mask = image_e.mask
        image_e = image_e.data
    data = np.asarray(image_e)
    if data.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {data.shape}.")
    size = int(size)
    ny, nx = data.shape
    if size < 1 or size > min(ny, nx):
        raise ValueError(f"Crop size {size} does not fit the image of shape {data.shape}.")
    if not 0 <= max_bad_fraction <= 1:
        raise ValueError("max_bad_fraction must be in [0, 1].")
    rng = np.random.default_rng(rng)
    bad = ~np.isfinite(data) | (data == 0)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    # summed-area table: bad count of any crop in O(1)
    sat = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(bad, axis=0), axis=1)
    limit = max_bad_fraction * size * size
    crops = np.empty((n, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=bool)
    corners = np.empty((n, 2), dtype=int)
    for i in range(n):
        for _ in range(max_tries):
            y = int(rng.integers(0, ny - size + 1))
            x = int(rng.integers(0, nx - size + 1))
            nbad = sat[y + size, x + size] - sat[y, x + size] - sat[y + size, x] + sat[y, x]
            if nbad <= limit:
                break
        else:
            raise ValueError(
                f"No crop of size {size} with at most {max_bad_fraction:.0%} bad pixels "
                f"found in {max_tries} tries."
            )
        sl = (slice(y, y + size), slice(x, x + size))
        crops[i] = np.where(bad[sl], 0.0, data[sl])
        masks[i] = bad[sl]
        corners[i] = (y, x)
    return crops, masks, corners


def dihedral_augment(*arrays, rng=None, k=None, flip=None):
    """
    Apply one random flip / 90-degree rotation to several arrays alike.

    These eight symmetries keep the physics (pixel values, noise statistics,
    PSF shapes up to orientation); no interpolation is involved.

    Parameters
    ----------
    *arrays : `numpy.ndarray`
        Arrays of the same shape in their last two axes.
    rng : `numpy.random.Generator` or int, optional
        Random generator or seed (used for ``k``/``flip`` not given).
    k : int, optional
        Number of 90-degree rotations (0-3).
    flip : bool, optional
        Flip the last axis before rotating.

    Returns
    -------
    augmented : tuple of `numpy.ndarray`
        Contiguous copies, in the order given.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.training import dihedral_augment
    >>> a = np.arange(4).reshape(2, 2)
    >>> (b,) = dihedral_augment(a, k=1, flip=False)
    >>> b.tolist(), int(b.sum()) == int(a.sum())
    ([[1, 3], [0, 2]], True)
    """
    rng = np.random.default_rng(rng)
    if k is None:
        k = int(rng.integers(0, 4))
    if flip is None:
        flip = bool(rng.integers(0, 2))
    out = []
    for a in arrays:
        a = np.asarray(a)
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(np.rot90(a, k, axes=(-2, -1))))
    return tuple(out)


class RealImageDataset:
    """
    Random crops of the real images of one split, in electrons.

    A map-style dataset (``len`` and integer indexing), usable directly with
    ``torch.utils.data.DataLoader``.  Item ``i`` of epoch ``e`` is drawn
    from its own generator seeded with ``(seed, e, i)``, so the data are
    reproducible and independent of the number of loader workers.  Images
    are picked with probability proportional to their number of valid
    pixels; images smaller than ``size`` are skipped (listed in
    ``skipped``).

    Parameters
    ----------
    data_dir : str or path-like, optional
        Data directory (default: ``ASTRO_UNET_DATA``).
    table : `~astropy.table.Table` or path, optional
        Exposure table (default: the shipped one).
    split : str or sequence of str, optional
        Split(s) to use.
    size : int, optional
        Crop side in pixels.  The paper used 256, but most real HST images
        of the table are 160-281 pixels wide, hence the default 128.
    length : int, optional
        Number of items per epoch.
    seed : int, optional
        Base seed.
    augment : bool, optional
        Random flips / 90-degree rotations.
    max_bad_fraction : float, optional
        See `random_crops`.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from astropy.io import fits
    >>> from astropy.table import Table
    >>> from astro_unet.training import RealImageDataset, EXPOSURE_TABLE_COLUMNS
    >>> d = tempfile.mkdtemp()
    >>> fits.writeto(os.path.join(d, "a.fits"), np.full((40, 40), 2.0, "f4"))
    >>> row = ["a.fits", "0", "", "adu", 0.0, "", "", 0.0, 10.0, "header", 1.5, "header",
    ...        3.0, 0.0, False, 1.0, "train", ""]
    >>> table = Table(rows=[row], names=EXPOSURE_TABLE_COLUMNS)
    >>> ds = RealImageDataset(d, table=table, size=16, length=4, seed=1)
    >>> item = ds[0]
    >>> item["image"].shape, float(item["image"][0, 0]), item["exposure_time"]
    ((16, 16), 3.0, 10.0)
    """

    def __init__(self, data_dir=None, *, table=None, split="train", size=128, length=1024,
                 seed=0, augment=True, max_bad_fraction=0.1):
        if table is None or isinstance(table, (str, os.PathLike)):
            table = read_exposure_table(table)
        splits = (split,) if isinstance(split, str) else tuple(split)
        self.data_dir = default_data_dir(data_dir)
        self.size = int(size)
        self.length = int(length)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.max_bad_fraction = float(max_bad_fraction)
        self.epoch = 0
        self.rows = []
        self.images = []
        self.skipped = []
        weights = []
        for row in table:
            if str(row["split"]) not in splits:
                continue
            ccd = load_training_image(row, self.data_dir)
            if min(ccd.shape) < self.size:
                self.skipped.append(str(row["path"]))
                continue
            self.rows.append(row)
            self.images.append(ccd)
            weights.append(float((~ccd.mask).sum()))
        if not self.images:
            raise ValueError(f"No image of split {splits} is at least {self.size} pixels wide.")
        self.weights = np.asarray(weights) / np.sum(weights)

    def set_epoch(self, epoch):
        """Select the epoch (changes the crops drawn for every index)."""
        self.epoch = int(epoch)

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        j = int(rng.choice(len(self.images), p=self.weights))
        ccd, row = self.images[j], self.rows[j]
        crops, masks, _ = random_crops(ccd.data, ccd.mask, size=self.size, rng=rng,
                                       max_bad_fraction=self.max_bad_fraction)
        crop, mask = crops[0], masks[0]
        if self.augment:
            crop, mask = dihedral_augment(crop, mask, rng=rng)
        return {
            "image": crop,
            "mask": mask,
            "exposure_time": float(row["exposure_time"]),
            "read_noise": float(row["read_noise"]),
            "sky_level": float(row["sky_level"]),
            "sky_subtracted": bool(row["sky_subtracted"]),
            "noise_correlation": float(row["noise_correlation"]),
            "path": str(row["path"]),
        }


# ---------------------------------------------------------------------------
# Making the table (recipes for ../shared/data)
# ---------------------------------------------------------------------------

#: Read noise of HST detectors (electrons per read) used in the table.
_HST_RON = {"wfc3_uvis": 3.1, "acs_wfc": 4.7, "wfpc2": 5.2}

#: DECam zero points (AB mag giving 1 e-/s), Legacy Surveys nominal values.
_DECAM_ZP = {"g": 25.08, "r": 25.29, "z": 24.92}

#: Nominal dark-sky brightness for DECam (mag/arcsec^2; Legacy Surveys
#: observing-strategy values) and SDSS (Stoughton et al. 2002), used to anchor
#: the noise of sky-subtracted ground-based coadds.
_SKY_MAG = {"decam": {"g": 22.04, "r": 20.91, "z": 18.46},
            "sdss": {"g": 21.9, "r": 20.9, "i": 20.1}}

#: Typical SDSS g-band gain (e-/DN; the six camcols span 3.3-4.05).
_SDSS_G_GAIN = 3.85

_SLACS = ("0753+3416", "1051+4439", "1430+6104",      # sky not subtracted first
          "0029-0055", "0737+3216", "0956+5100", "1627-0053")


def _recipes():
    """How each file of the data directory is calibrated (static facts + methods)."""
    r = []
    for name, ncomb, split in (("wfc3uvis_f555w_hla_11360_e1_crop.fits", 3, "test"),
                               ("wfc3uvis_f606w_hla_11730_04_crop.fits", 4, "test")):
        r.append(dict(
            path=f"hst/{name}", hdu="0", unit="electron/s", gain=1.0,
            gain_source="unit electron/s", exptime="noise", sky="none", sky_subtracted=False,
            read_noise=_HST_RON["wfc3_uvis"] * math.sqrt(ncomb),
            ron_note=f"3.1 e- x sqrt(NCOMBINE={ncomb})", split=split,
            notes="paper validation field, kept out of training; HLA drizzled crop without "
                  "EXPTIME; background B taken as the full sky (HLA may have subtracted part "
                  "of it: then the exposure time is a lower bound)"))
    r.append(dict(
        path="hst/wfpc2_f814w_abell478_sci_wht.fits", hdu="SCI", weight_hdu="WHT",
        unit="count/s", gain="header:ATODGAIN", exptime="header:EXPTIME", sky="none",
        sky_subtracted=False, read_noise=_HST_RON["wfpc2"],
        ron_note="WFPC2 ~5.2 e- at gain 7, one read", split="test",
        notes="extra test field; one 600 s exposure drizzled (4 chips; no cosmic-ray "
              "rejection: cosmic rays remain in the truth); WHT<=0 masked"))
    for name in _SLACS:
        r.append(dict(
            path=f"hst/acs_f814w_slacs_sdssj{name}.fits", hdu="SCI", unit="electron/s",
            gain=1.0, gain_source="unit electron/s", exptime="noise", sky="mdrizsky",
            sky_subtracted="mdrizsky", read_noise="acs-ncombine", split="train",
            notes="SLACS lens, HLA drizzled cutout 198x198 (smaller than a 256 crop)"))
    r.append(dict(
        path="hst/acs_f814w_slacs0728_noheader.fits", hdu="0", unit="electron/s", gain=1.0,
        gain_source="unit assumed electron/s (no header)", exptime="noise", sky="acs-rate",
        sky_subtracted=True, read_noise=_HST_RON["acs_wfc"] * math.sqrt(2),
        ron_note="4.7 e- x sqrt(2 exposures, assumed)", split="validation",
        notes="headerless PyAutoLens cutout (0.05 arcsec/px); unit e/s assumed (values, "
              "MANIFEST); sky subtracted (background median ~0)"))
    r.append(dict(
        path="hst/acs_f814w_rxj1131_noheader.fits", hdu="0", unit="electron/s", gain=1.0,
        gain_source="unit assumed electron/s (no header)", exptime="noise", sky="acs-rate",
        sky_subtracted=True, read_noise=_HST_RON["acs_wfc"] * 2.0,
        ron_note="4.7 e- x sqrt(4 exposures, assumed)", split="train",
        notes="headerless lensed-quasar cutout; unit e/s assumed; sky taken as subtracted"))
    for i in (1, 2, 3):
        r.append(dict(
            path=f"hst/acs_f814w_cosmos_cut{i}.fits", hdu="0", unit="adu", gain="noise",
            exptime=2028.0, exptime_source="nominal COSMOS ACS F814W depth 4 x 507 s "
                                           "(Koekemoer et al. 2007); not in the header",
            sky="acs-rate-cosmos", sky_subtracted=True,
            read_noise=_HST_RON["acs_wfc"] * 2.0 * 0.6,
            ron_note="4.7 e- x sqrt(4 exposures) x 0.03/0.05 (drizzled to smaller pixels)",
            split="train",
            notes="COSMOS mosaic cutout 0.03 arcsec/px; no BUNIT and an unknown scale of "
                  "values: unit 'adu' stands for that unknown unit"))
    r.append(dict(
        path="hst/acs_f814w_cosmos_galsim_stamp.fits", hdu="0", unit="electron/s", gain=1.0,
        gain_source="-", exptime="header:EXPTIME", sky="none", sky_subtracted=True,
        read_noise=0.0, split="excluded",
        notes="GalSim COSMOS stamp: neighbours replaced by synthetic noise, BUNIT "
              "contradicts the values; not a real noise field"))
    r.append(dict(
        path="hst/wfpc2_f606w_hdfs.fits", hdu="DATA", unit="adu", gain=1.0,
        gain_source="-", exptime="header:EXPTIME", sky="none", sky_subtracted=True,
        read_noise=0.0, split="excluded",
        notes="HDF-S WFPC2 drizzled mosaic with unlabelled, normalised units: the photon "
              "transfer is not constrained (its faint galaxies never exceed the sky noise) "
              "and there is no sky level to anchor the background method, so no electron "
              "scale can be given; excluded rather than guessed"))
    # ground-based
    r.append(dict(
        path="ground/ctio_mosaic2_i_tanpv.fits", hdu="0", unit="adu", gain="noise",
        saturation=44000.0,
        exptime="header:EXPTIME", sky="none", sky_subtracted=False, read_noise=6.0,
        ron_note="typical Mosaic2 (assumed)", split="train",
        notes="reduced Mosaic2 cutout, sky present; saturation = header SATURATE"))
    r.append(dict(
        path="ground/des_r.fits.fz", hdu="0", unit="adu", gain="header:GAIN",
        exptime="header:EXPTIME", sky="noise", sky_subtracted=True,
        read_noise=7.0 * math.sqrt(8), ron_note="~7 e- x sqrt(~8 exposures) (assumed)",
        split="train",
        notes="DES coadd (ZP 30): BUNIT says COUNTS/S but electrons = value x GAIN (the "
              "noise agrees); sky subtracted, sky_level from the noise"))
    for band in "grz":
        r.append(dict(
            path=f"ground/legacysurvey_{band}.fits.fz", hdu="0", unit="nanomaggy",
            saturation=9.999, gain="noise", exptime=f"decam-zp:{band}",
            sky=f"nominal:decam:{band}:0.262",
            sky_subtracted=True, read_noise=7.0 * math.sqrt(3),
            ron_note="~7 e- x sqrt(3 passes) (assumed)", split="train",
            notes="Legacy Survey DECam coadd, nanomaggy, sky subtracted; resampled "
                  "(noise correlated); ~1000 pixels of saturated cores pinned at 10 nmgy: "
                  "saturation 9.999 masks them"))
    for band in "gri":
        r.append(dict(
            path=f"ground/sdss_{band}_reprojected.fits", hdu="0", unit="nanomaggy",
            gain="sdss" if band == "g" else "noise", exptime="header:EXPTIME",
            sky=f"nominal:sdss:{band}:0.1622", sky_subtracted=True, read_noise=0.0,
            ron_note="neglected (sky-dominated)", split="train",
            notes="SDSS frame reprojected to 0.162 arcsec/px (flux-conserving, judging by the "
                  "noise), nanomaggy, sky subtracted; header copied from g (NMGY valid for g "
                  "only)"))
    for i in range(1, 6):
        r.append(dict(
            path=f"ground/m13_blue_000{i}.fits", hdu="0", unit="adu", zero_level=500.0,
            saturation=65535.0,
            gain="m13", exptime="header:EXPTIME", sky="none", sky_subtracted=False,
            read_noise="m13", split="realnoise",
            notes="raw 5 s amateur CCD frame (PEDESTAL -500 removed: zero_level 500), not "
                  "flat-fielded; kept for the real-noise check"))
    r.append(dict(
        path="ground/m51_b.fits", hdu="0", unit="adu", gain="noise", exptime="header:ITIME",
        sky="none", sky_subtracted=False, read_noise=10.0,
        ron_note="1987 KPNO CCD (assumed)", split="train",
        notes="KPNO 1987 CCD frame, overscan and flat corrected; EXPTIME missing: ITIME = "
              "OTIME = 600 s and OBJECT 'm51 B 600s'"))
    r.append(dict(
        path="ground/ntt_emmi_r_sep.fits", hdu="0", unit="adu", gain="noise",
        exptime="header:EXPTIME", sky="none", sky_subtracted=False,
        read_noise=5.0 * math.sqrt(3), ron_note="~5 e- x sqrt(3 frames) (assumed)",
        split="validation",
        notes="NTT/EMMI R, sum of 3 x 400 s, bias and flat corrected; header ESO DET "
              "AD_VALUE = 2.1 (meaning for this sum unclear): the lower noise value is "
              "used (conservative)"))
    r.append(dict(
        path="ground/saao_raw_ccdproc.fits", hdu="0", unit="adu", saturation=65535.0,
        bias_section="[4:13,1:520]", trim_section="[17:528,1:520]", gain="header:GAIN",
        exptime="header:EXPTIME", sky="none", sky_subtracted=False,
        read_noise="header:RDNOISE", split="train",
        notes="raw frame: overscan (BIASSEC) median subtracted row by row, trimmed to "
              "TRIMSEC; not flat-fielded"))
    return r


def _repeat_noise(frames, zero_level):
    """Temporal noise (data units) and level of the fainter 80 % of repeated frames."""
    stack = np.array(frames, dtype=float) - zero_level
    mean = stack.mean(axis=0)
    resid = stack - mean
    n = stack.shape[0]
    bg = mean < np.percentile(mean, 80)
    var = _robust_variance(resid[:, bg].ravel()) * n / (n - 1)
    return math.sqrt(var), float(np.median(mean[bg]))


def make_exposure_table(data_dir=None):
    """
    Compute the exposure table for the project's real images.

    Header values are taken where they exist; the rest is estimated from the
    noise with `estimate_gain_from_noise` (and, for the repeated M13 frames,
    from their frame-to-frame differences).  Each row says how its numbers
    were obtained.  The shipped ``exposures.ecsv`` is the output of
    ``python -m astro_unet.training.data --make-table DATA_DIR -o FILE``.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Directory holding ``hst/`` and ``ground/`` (default:
        ``ASTRO_UNET_DATA``).

    Returns
    -------
    table : `~astropy.table.Table`
        Columns `EXPOSURE_TABLE_COLUMNS`.

    Raises
    ------
    FileNotFoundError
        A file of the recipe list is missing.

    Examples
    --------
    Needs the project's data directory (about two minutes on two cores):

    >>> from astro_unet.training import make_exposure_table
    >>> table = make_exposure_table("../shared/data")  # doctest: +SKIP
    >>> table.write("exposures.ecsv", format="ascii.ecsv")  # doctest: +SKIP
    """
    data_dir = default_data_dir(data_dir)
    rows = []
    cache = {}
    for rec in _recipes():
        try:
            rows.append(_table_row(rec, data_dir, cache))
        except ValueError as exc:
            raise ValueError(f"{rec['path']}: {exc}") from exc
    table = Table(rows=rows, names=EXPOSURE_TABLE_COLUMNS)
    for col in ("zero_level", "exposure_time", "gain", "read_noise", "sky_level",
                "noise_correlation"):
        table[col] = [float(f"{v:.5g}") for v in table[col]]
    table["exposure_time"].unit = u.s
    table["read_noise"].unit = u.electron
    table["sky_level"].unit = u.electron
    table.meta["comments"] = [
        "astro_unet training images: calibration of ../shared/data (the data are not in the "
        "repository).",
        "Made by: python -m astro_unet.training.data --make-table ../shared/data "
        "-o astro_unet/training/exposures.ecsv",
        "electrons = (data - zero_level) * gain, times exposure_time for rate units.",
        "Noise estimates: astro_unet.training.data.estimate_gain_from_noise; background "
        "method V k^2 = (B+s) k + S + R^2 with V the correlation-corrected variance; "
        "photon transfer = slope of variance vs signal.",
        "sky_level [e-]: background per pixel, present in the data unless sky_subtracted "
        "(then: the level that was removed, for simulate_short_exposure(sky=...)).",
    ]
    return table


def _read_any(path, hdu):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path) as hdul:
            h = hdul[_hdu_key(hdu)]
            return np.array(h.data, dtype=float), h.header.copy(), hdul[0].header.copy()


def _table_row(rec, data_dir, cache):
    """One row of the exposure table from one recipe (see `_recipes`)."""
    path = Path(data_dir) / rec["path"]
    if not path.exists():
        raise FileNotFoundError(path)
    data, header, primary = _read_any(path, rec["hdu"])
    notes = [rec.get("notes", "")]
    zero = float(rec.get("zero_level", 0.0))
    saturated = data >= rec["saturation"] if rec.get("saturation") else None
    data = data - zero
    if rec.get("bias_section"):
        from ccdproc.utils.slices import slice_from_string

        over = data[slice_from_string(rec["bias_section"], fits_convention=True)]
        data = data - np.median(over, axis=1, keepdims=True)
        trim = slice_from_string(rec["trim_section"], fits_convention=True)
        data = data[trim]
        if saturated is not None:
            saturated = saturated[trim]
    wmask = saturated
    if rec.get("weight_hdu"):
        weight, _, _ = _read_any(path, rec["weight_hdu"])
        wmask = ~(weight > 0) if wmask is None else wmask | ~(weight > 0)

    def hdr(key):
        for h in (header, primary):
            if key in h:
                return h[key]
        return None

    unit = rec["unit"]
    rate = _is_rate(u.Unit(unit))
    ncomb = int(hdr("NCOMBINE") or 0)
    mdriz = float(hdr("MDRIZSKY") or 0.0)
    noise = measure_noise(data, mask=wmask)

    # --- read noise
    ron, ron_note = rec.get("read_noise"), rec.get("ron_note", "")
    if isinstance(ron, str) and ron.startswith("header:"):
        ron = float(hdr(ron.split(":")[1]))
        ron_note = "header RDNOISE"
    elif ron == "acs-ncombine":
        ron = _HST_RON["acs_wfc"] * math.sqrt(max(ncomb, 1))
        ron_note = f"4.7 e- x sqrt(NCOMBINE={max(ncomb, 1)})"
    elif ron == "m13":
        ron = None  # below

    # --- sky subtraction and the subtracted sky
    skysub = rec.get("sky_subtracted")
    sky_kw = {}
    if rec["sky"] == "mdrizsky":
        skysub = mdriz > 0
        notes.append(f"MDRIZSKY={mdriz:.4g} e-" + (
            f" per exposure subtracted: S = MDRIZSKY x NCOMBINE = {mdriz * max(ncomb, 1):.4g} e-"
            if skysub else ": sky not subtracted"))
        if skysub:
            sky_kw = dict(subtracted_sky_electrons=mdriz * max(ncomb, 1))
    elif rec["sky"].startswith("nominal:"):
        _, system, band, scale = rec["sky"].split(":")
        mag = _SKY_MAG[system][band]
        s_nmgy = 10 ** (-0.4 * (mag - 22.5)) * float(scale) ** 2
        sky_kw = dict(subtracted_sky=s_nmgy)
        notes.append(f"subtracted sky assumed {s_nmgy:.4g} nmgy/px: nominal {system.upper()} "
                     f"{band} sky {mag} mag/arcsec^2 x ({scale} arcsec)^2")
    elif rec["sky"] in ("acs-rate", "acs-rate-cosmos"):
        rate_e = cache.get("acs_sky_rate")
        if rate_e is None:
            raise ValueError("the ACS sky rate must be measured first (SLACS rows).")
        if rec["sky"] == "acs-rate":
            sky_kw = dict(subtracted_sky=rate_e)
            notes.append(f"subtracted sky assumed {rate_e:.3g} e/s/px (ACS F814W background "
                         "measured on the unsubtracted SLACS cutouts)")
        else:
            s_e = rate_e * (0.03 / 0.05) ** 2 * float(rec["exptime"])
            sky_kw = dict(subtracted_sky_electrons=s_e)
            notes.append(f"subtracted sky assumed {s_e:.3g} e-/px = {rate_e:.3g} e/s per "
                         "0.05 arcsec px (SLACS, unsubtracted) x (0.03/0.05)^2 x 2028 s")

    exptime, exptime_source = rec.get("exptime"), rec.get("exptime_source", "")
    gain, gain_source = rec.get("gain"), rec.get("gain_source", "")
    sky_e = None

    if isinstance(exptime, str) and exptime.startswith("header:"):
        key = exptime.split(":")[1]
        exptime = float(hdr(key))
        exptime_source = f"header {key}"
        if ncomb > 1:
            exptime_source += f" (NCOMBINE={ncomb})"

    def estimate(**kw):
        return estimate_gain_from_noise(data, mask=wmask, read_noise=ron or 0.0, **kw)

    def cross_check():
        try:
            pt = estimate(method="photon transfer")
            notes.append(f"photon-transfer cross-check: {pt.gain:.4g}")
        except ValueError as exc:
            notes.append(f"photon-transfer cross-check not possible ({exc})")

    if exptime == "noise":  # electron/s image: electrons per unit = exposure time
        est = estimate(method="background", **sky_kw)
        exptime, sky_e = est.gain, est.sky_level
        exptime_source = f"estimated from background noise: {est.description}"
        if ncomb:
            exptime_source += f"; NCOMBINE={ncomb}"
        cross_check()
        if rec["path"].startswith("hst/acs_f814w_slacs_") and not skysub:
            cache.setdefault("acs_rates", []).append(noise.background)
            cache["acs_sky_rate"] = float(np.median(cache["acs_rates"]))
    elif isinstance(exptime, str) and exptime.startswith("decam-zp:"):
        pass  # from the gain, below
    else:
        exptime = float(exptime)

    if gain == "noise":
        est = estimate(method="background", **sky_kw)
        cross_check()
        gain, sky_e = est.gain, est.sky_level
        gain_source = f"estimated from noise: {est.description}"
        if isinstance(exptime, str) and exptime.startswith("decam-zp:"):
            band = exptime.split(":")[1]
            per_nmgy = 10 ** (0.4 * (_DECAM_ZP[band] - 22.5))
            exptime = gain / per_nmgy
            exptime_source = (f"estimated from noise: effective gain / DECam {band} zero "
                              f"point {_DECAM_ZP[band]} ({per_nmgy:.3g} e-/s per nmgy)")
    elif isinstance(gain, str) and gain.startswith("header:"):
        key = gain.split(":")[1]
        gain = float(hdr(key))
        gain_source = f"header {key}"
        k = gain * (exptime if rate else 1.0)
        try:
            chk = estimate(method="background" if not skysub else "photon transfer")
            notes.append(f"noise cross-check ({chk.method}): {chk.gain:.4g} e-/unit vs "
                         f"{k:.4g}")
        except ValueError as exc:
            notes.append(f"noise cross-check not possible ({exc})")
    elif gain == "sdss":
        nmgy = float(hdr("NMGY"))
        gain = _SDSS_G_GAIN / nmgy
        gain_source = (f"header NMGY={nmgy:.6g} nmgy/DN with the typical SDSS g gain "
                       f"{_SDSS_G_GAIN} e-/DN")
        chk = estimate(method="background", **sky_kw)
        notes.append(f"noise cross-check (background, nominal sky): {chk.gain:.4g}")
        cross_check()
    elif gain == "m13":
        if "m13" not in cache:
            frames = [_read_any(Path(data_dir) / f"ground/m13_blue_000{i}.fits", 0)[0]
                      for i in range(1, 6)]
            cache["m13"] = _repeat_noise(frames, zero)
        sigma_t, level = cache["m13"]
        gain = 1.0
        gain_source = ("assumed 1 e-/DN: not measurable (read-noise dominated; the "
                       f"frame-to-frame noise, {sigma_t:.3g} DN, does not grow with the signal)")
        ron = math.sqrt(max(sigma_t ** 2 - max(level, 0.0), 0.0))
        ron_note = (f"frame-to-frame rms of the 5 frames ({sigma_t:.3g} DN) minus sky "
                    "Poisson, at gain 1")
        sky_e = max(level, 0.0)

    if gain is None or not np.isfinite(float(gain)):
        raise ValueError("no gain.")
    gain = float(gain)
    if sky_e is None:
        k = gain * (exptime if rate else 1.0)
        if skysub:
            var_e = noise.variance * k * k
            sky_e = max(var_e - (ron or 0.0) ** 2 - noise.background * k, 0.0)
            notes.append("sky_level from the background variance")
        else:
            sky_e = noise.background * k
    if ron_note:
        notes.append(f"RON: {ron_note}")
    return [
        rec["path"], str(rec["hdu"]), rec.get("weight_hdu", ""), unit, float(zero),
        rec.get("bias_section", ""), rec.get("trim_section", ""),
        float(rec.get("saturation", 0.0)), float(exptime),
        exptime_source, gain, gain_source, float(ron or 0.0), float(sky_e), bool(skysub),
        float(noise.correlation), rec["split"], "; ".join(n for n in notes if n),
    ]


def main(argv=None):
    """Command line: ``python -m astro_unet.training.data --make-table DATA_DIR``."""
    parser = argparse.ArgumentParser(prog="python -m astro_unet.training.data",
                                     description=__doc__.split("\n")[1])
    parser.add_argument("--make-table", metavar="DATA_DIR", required=True,
                        help="directory of the real images (../shared/data)")
    parser.add_argument("-o", "--output", default=None,
                        help="ECSV file to write (default: print to stdout)")
    args = parser.parse_args(argv)
    table = make_exposure_table(args.make_table)
    if args.output:
        table.write(args.output, format="ascii.ecsv", overwrite=True)
    else:
        table.write(sys.stdout, format="ascii.ecsv")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
