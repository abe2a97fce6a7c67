# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Plots that show whether the science survived denoising.

The image panels use `astropy.visualization` (`~astropy.visualization.ZScaleInterval`,
`~astropy.visualization.ImageNormalize` and its stretches), as the paper's
figures do: every panel of `plot_comparison` shares the colour limits
computed from the *first* image, so that noise, depth and artefacts can be
compared by eye.  Images with a celestial WCS are drawn on
`~astropy.visualization.wcsaxes.WCSAxes` (sky coordinates on the axes).

The catalogue plots read the table of `~astro_unet.photometric_comparison`:
`plot_flux_error` (relative flux error against reference flux, paper Fig. 6),
`plot_completeness` (fraction of reference sources recovered against their
flux) and, for pixels, `plot_pixel_distribution` (histograms of pixel values
with a logarithmic count axis, paper Fig. 7).

Figures are made with `matplotlib.pyplot` (so that Jupyter, scripts with
``plt.show()`` and sphinx-gallery see them) but nothing else touches
pyplot's state; close them with ``plt.close(fig)`` in loops.  Image and
figure functions return the `~matplotlib.figure.Figure`, the line plots the
`~matplotlib.axes.Axes` they drew on.
"""

import numpy as np
import astropy.units as u
from astropy.nddata import NDData
from astropy.table import Table
from astropy.visualization import (
    AsinhStretch,
    BaseInterval,
    BaseStretch,
    ImageNormalize,
    LinearStretch,
    LogStretch,
    ManualInterval,
    MinMaxInterval,
    PercentileInterval,
    SqrtStretch,
    ZScaleInterval,
)
from astropy.wcs import WCS

__all__ = [
    "plot_comparison",
    "plot_residuals",
    "plot_flux_error",
    "plot_pixel_distribution",
    "plot_completeness",
]

#: Stretches accepted by name (``stretch=``).
STRETCHES = {
    "linear": LinearStretch,
    "asinh": AsinhStretch,
    "sqrt": SqrtStretch,
    "log": LogStretch,
}


# --------------------------------------------------------------------------- helpers
def _image(image, name, unit=None):
    """
    ``(data, unit, wcs, mask)`` of one image: float64 copy of the data
    (converted to ``unit`` when given), its unit, its celestial WCS (or None)
    and its boolean mask (None when it has none).
    """
    wcs = mask = None
    if isinstance(image, NDData):
        data = np.array(image.data, dtype=float, copy=True)
        if image.mask is not None:
            mask = np.asarray(image.mask, dtype=bool)
            if mask.shape != data.shape:
                raise ValueError(f"{name}.mask shape {mask.shape} differs from its data "
                                 f"{data.shape}.")
        img_unit = None if image.unit is None else u.Unit(image.unit)
        if isinstance(image.wcs, WCS) and image.wcs.has_celestial \
                and image.wcs.pixel_n_dim == 2:
            wcs = image.wcs.celestial
    elif isinstance(image, u.Quantity):
        data = np.array(image.value, dtype=float, copy=True)
        img_unit = image.unit
    else:
        try:
            data = np.array(image, dtype=float, copy=True)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a CCDData, NDData, Quantity or numpy array, "
                            f"got {type(image).__name__}.") from None
        img_unit = None
    if data.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image, got shape {data.shape}.")
    usable = np.isfinite(data) if mask is None else np.isfinite(data) & ~mask
    if not usable.any():
        raise ValueError(f"{name} has no finite, unmasked pixel.")
    if unit is not None and img_unit is not None and img_unit != unit:
        try:
            data *= img_unit.to(unit)
        except u.UnitConversionError:
            raise u.UnitsError(f"{name} is in '{img_unit}', which cannot be converted to "
                               f"the first image's unit '{unit}'.") from None
        img_unit = unit
    return data, img_unit, wcs, mask


def _usable(data, mask):
    """Finite, unmasked pixel values."""
    good = np.isfinite(data)
    if mask is not None:
        good &= ~mask
    return data[good]


def _shown(data, mask, mask_color):
    """The array drawn: masked pixels become NaN only when a mask colour is asked for."""
    if mask_color is not None and mask is not None:
        data = data.copy()
        data[mask] = np.nan
    return data


def _same_grid(left, right, use_wcs):
    """Whether two images share their y axis (same shape and, if drawn with it, WCS)."""
    if left[0].shape != right[0].shape:
        return False
    lw, rw = (left[2], right[2]) if use_wcs else (None, None)
    if lw is None or rw is None:
        return lw is None and rw is None
    return bool(lw.wcs.compare(rw.wcs, tolerance=1e-10))


def _interval(interval):
    """An astropy interval object from ``interval``."""
    if isinstance(interval, BaseInterval):
        return interval
    if isinstance(interval, str):
        key = interval.lower()
        if key == "zscale":
            return ZScaleInterval()
        if key == "minmax":
            return MinMaxInterval()
    elif isinstance(interval, (int, float, np.number)) and not isinstance(interval, bool) \
            and 0 < interval <= 100:
        return PercentileInterval(float(interval))
    elif isinstance(interval, (tuple, list)) and len(interval) == 2:
        lo, hi = (float(v) for v in interval)
        if not lo < hi:
            raise ValueError(f"interval (vmin, vmax) needs vmin < vmax, got {interval!r}.")
        return ManualInterval(lo, hi)
    raise ValueError(
        "interval must be 'zscale', 'minmax', a percentile in (0, 100], a (vmin, vmax) "
        f"pair or an astropy.visualization interval, got {interval!r}."
    )


def _stretch(stretch):
    if isinstance(stretch, BaseStretch):
        return stretch
    if isinstance(stretch, str) and stretch.lower() in STRETCHES:
        return STRETCHES[stretch.lower()]()
    raise ValueError(f"stretch must be one of {sorted(STRETCHES)} or an astropy.visualization "
                     f"stretch, got {stretch!r}.")


def _limits(values, interval):
    """Colour limits of ``values`` (finite pixel values)."""
    vmin, vmax = (float(v) for v in interval.get_limits(values))
    if not vmax > vmin:  # a flat image
        vmin, vmax = vmin - 0.5, vmax + 0.5
    return vmin, vmax


def _unit_label(unit):
    return "" if unit is None or unit == u.dimensionless_unscaled else \
        f" [{unit.to_string()}]"


def _default_title(image, index):
    meta = getattr(image, "meta", None) or {}
    try:
        exptime = meta.get("EXPTIME")
    except AttributeError:  # pragma: no cover - exotic meta
        exptime = None
    if isinstance(exptime, tuple):  # dict meta with (value, comment)
        exptime = exptime[0]
    if isinstance(exptime, (int, float)) and not isinstance(exptime, bool):
        return f"image {index + 1} (EXPTIME {exptime:g} s)"
    return f"image {index + 1}"


#: Figure margins in inches: left (sky / pixel axes), top, bottom, colour bar
#: (pad, width, room for its labels), right without colour bar, gap between
#: panels that share their y axis.
_MARGIN = {"left_wcs": 1.3, "left_pixel": 0.65, "top": 0.4, "bottom": 0.62,
           "cbar_pad": 0.12, "cbar_width": 0.14, "cbar_label": 0.9, "right": 0.2,
           "shared_gap": 0.15}


def _image_layout(n, aspect, gaps, left, figsize, colorbar, panel=3.4):
    """
    Figure and axes rectangles (figure fractions) for ``n`` image panels in a row.

    ``aspect`` is height / width of the panels, ``gaps`` the ``n - 1``
    spaces between panels and ``left`` the left margin (inches).  Returns
    ``(fig, rects, cbar_rect)``.
    """
    import matplotlib.pyplot as plt

    m = _MARGIN
    right = m["cbar_pad"] + m["cbar_width"] + m["cbar_label"] if colorbar else m["right"]
    fixed_w = left + sum(gaps) + right
    fixed_h = m["top"] + m["bottom"]
    if figsize is None:
        width, height = fixed_w + n * panel, fixed_h + panel * aspect
    else:
        width, height = (float(v) for v in figsize)
        panel = min((width - fixed_w) / n, (height - fixed_h) / aspect)
        if panel <= 0:
            raise ValueError(f"figsize {figsize!r} leaves no room for {n} panels.")
    fig = plt.figure(figsize=(width, height))
    # centre the block of panels in any room left over
    x = (width - (fixed_w + n * panel)) / 2 + left
    y = (height - (fixed_h + panel * aspect)) / 2 + m["bottom"]
    rects = []
    for i in range(n):
        rects.append((x / width, y / height, panel / width, panel * aspect / height))
        x += panel + (gaps[i] if i < n - 1 else 0.0)
    cbar = None
    if colorbar:
        cbar = ((x + m["cbar_pad"]) / width, y / height, m["cbar_width"] / width,
                panel * aspect / height)
    return fig, rects, cbar


def _add_image_axes(fig, rect, wcs, use_wcs):
    if use_wcs and wcs is not None:
        ax = fig.add_axes(rect, projection=wcs)
        ax.coords[0].set_axislabel("RA")
        ax.coords[1].set_axislabel("Dec")
        ax.coords[0].set_ticklabel(exclude_overlapping=True)
        ax.coords[1].set_ticklabel(exclude_overlapping=True)
        return ax
    ax = fig.add_axes(rect)
    ax.set_xlabel("x [pixel]")
    ax.set_ylabel("y [pixel]")
    return ax


def _cmap_with_bad(cmap, mask_color):
    """The colour map with ``mask_color`` for NaN/masked pixels (transparent if None)."""
    import matplotlib

    cmap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    return cmap.with_extremes(bad=mask_color if mask_color is not None else "none")


def _get_axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6.0, 4.2), layout="constrained")
    return ax


def _check_table(table, columns, name="table"):
    if not isinstance(table, Table):
        raise TypeError(f"{name} must be the astropy table returned by "
                        f"photometric_comparison, got {type(table).__name__}.")
    missing = [c for c in columns if c not in table.colnames]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {', '.join(missing)}: pass the table "
                         "returned by astro_unet.photometric_comparison.")


def _column(table, name):
    """(float values, unit or None) of a table column."""
    col = table[name]
    unit = getattr(col, "unit", None)
    value = getattr(col, "value", col)
    return np.asarray(value, dtype=float), (None if unit is None else u.Unit(unit))


# --------------------------------------------------------------------------- images
def plot_comparison(*ccds, titles=None, stretch="linear", interval="zscale", cmap="gray",
                    figsize=None, wcs=True, colorbar=True, mask_color=None):
    """
    Show images side by side with the same colour scale.

    The colour limits come from ``interval`` applied to the *first* image
    (by default its IRAF ZScale limits) and are used for every panel, so that
    noise levels and faint sources compare directly, as in the paper's
    figures.  Give rate images (electron/s) or images of the same exposure:
    a counts image of a short exposure has fewer counts than a long one.

    Parameters
    ----------
    *ccds : `~astropy.nddata.NDData` (``CCDData``), `~astropy.units.Quantity` or array
        One or more 2-D images.  Images with units are converted to the first
        image's unit.  Masked pixels are drawn with their values (see
        ``mask_color``) but left out of the colour limits; non-finite pixels
        are blank.
    titles : sequence of str, optional
        One title per image.  Default: ``"image N"`` plus ``EXPTIME`` when
        the header has it.
    stretch : {'linear', 'asinh', 'sqrt', 'log'} or `~astropy.visualization.BaseStretch`
        Stretch between the colour limits (default linear, as in the paper).
    interval : 'zscale', 'minmax', float, (vmin, vmax) or `~astropy.visualization.BaseInterval`
        How the colour limits are computed from the first image: ZScale
        (default), min/max, a percentile such as ``99.5``, or fixed limits.
    cmap : str or `~matplotlib.colors.Colormap`
        Colour map (default ``"gray"``).
    figsize : (float, float), optional
        Figure size in inches (default: 3.4 inches per panel, the height
        from the first image's aspect ratio).
    wcs : bool
        Draw images that have a celestial WCS on
        `~astropy.visualization.wcsaxes.WCSAxes` (default True).
    colorbar : bool
        Add one colour bar for all panels (default True).
    mask_color : matplotlib colour, optional
        Paint masked pixels in this colour (e.g. ``"red"``).  Default None:
        masked pixels show their values, as pixels replaced by
        `~astro_unet.clean_cosmic_rays` or filled by
        `~astro_unet.denoise_ccd` are.

    Returns
    -------
    fig : `~matplotlib.figure.Figure`
        ``fig.axes`` holds the image panels in order (then the colour bar);
        each panel's image has ``norm.vmin``/``norm.vmax`` equal to the
        shared limits.  Panels of images on the same pixel grid share their
        y axis labels.

    Raises
    ------
    TypeError
        No image given, or an image of an unknown type.
    ValueError
        An image that is not 2-D or has no finite pixel, a wrong number of
        titles, or an unknown ``stretch`` / ``interval``.
    astropy.units.UnitsError
        An image's unit cannot be converted to the first image's.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from astro_unet import load_sample_image, plot_comparison, simulate_short_exposure
    >>> long = load_sample_image()
    >>> short = simulate_short_exposure(long, 4, seed=1)
    >>> fig = plot_comparison(short, long, titles=["200 s", "802 s"])
    >>> [ax.get_title() for ax in fig.axes[:2]]
    ['200 s', '802 s']
    >>> plt.close(fig)
    """
    if not ccds:
        raise TypeError("plot_comparison needs at least one image.")
    if titles is not None:
        titles = [str(t) for t in titles]
        if len(titles) != len(ccds):
            raise ValueError(f"got {len(titles)} titles for {len(ccds)} images.")
    interval = _interval(interval)
    stretch = _stretch(stretch)
    first, unit, _, first_mask = _image(ccds[0], "image 1")
    images = [_image(c, f"image {i + 1}", unit) for i, c in enumerate(ccds)]
    vmin, vmax = _limits(_usable(first, first_mask), interval)
    if not isinstance(figsize, (tuple, list, type(None))) or \
            (figsize is not None and len(figsize) != 2):
        raise ValueError(f"figsize must be (width, height) in inches, got {figsize!r}.")

    n = len(images)
    shared = [i > 0 and _same_grid(images[i - 1], images[i], wcs) for i in range(n)]
    use_wcs = [wcs and img[2] is not None for img in images]
    left = _MARGIN["left_wcs"] if use_wcs[0] else _MARGIN["left_pixel"]
    gaps = [_MARGIN["shared_gap"] if shared[i] else
            (_MARGIN["left_wcs"] if use_wcs[i] else _MARGIN["left_pixel"])
            for i in range(1, n)]
    aspect = min(max(first.shape[0] / first.shape[1], 0.25), 4.0)
    fig, rects, cbar_rect = _image_layout(n, aspect, gaps, left, figsize, colorbar)
    colours = _cmap_with_bad(cmap, mask_color)
    panels = []
    for i, (data, _, image_wcs, mask) in enumerate(images):
        ax = _add_image_axes(fig, rects[i], image_wcs, wcs)
        norm = ImageNormalize(vmin=vmin, vmax=vmax, stretch=stretch)
        im = ax.imshow(_shown(data, mask, mask_color), origin="lower", cmap=colours,
                       norm=norm, interpolation="nearest", aspect="auto")
        ax.set_title(titles[i] if titles is not None else _default_title(ccds[i], i))
        if shared[i]:
            # the same y axis as the panel to the left: no repeated labels
            if use_wcs[i]:
                ax.coords[1].set_ticklabel_visible(False)
                ax.coords[1].set_axislabel("")
            else:
                ax.tick_params(labelleft=False)
                ax.set_ylabel("")
        panels.append((ax, im))
    if colorbar:
        cbar = fig.colorbar(panels[-1][1], cax=fig.add_axes(cbar_rect))
        cbar.set_label("pixel value" + _unit_label(unit))
    return fig


def plot_residuals(reference, test, *, relative=False, limit=None, interval="zscale",
                   stretch="linear", cmap="RdBu_r", title=None, figsize=None, wcs=True,
                   mask_color=None):
    """
    Show ``test - reference`` with colour limits symmetric about zero.

    Parameters
    ----------
    reference, test : `~astropy.nddata.NDData` (``CCDData``), `~astropy.units.Quantity` or array
        Two 2-D images on the same pixel grid (e.g. the long exposure and the
        denoised short one, both in electron/s).  ``test`` is converted to
        the reference unit.  Pixels not finite in either are blank; pixels
        masked in either are left out of the default ``limit``.
    relative : bool
        Show ``(test - reference) / |reference|`` instead (no unit).
    limit : float, optional
        Colour limits ``(-limit, +limit)``.  Default: the larger absolute
        value of the ``interval`` limits of the residual image.
    interval : 'zscale', 'minmax', float or `~astropy.visualization.BaseInterval`
        Used for the default ``limit`` (default ZScale of the residual).
    stretch : {'linear', 'asinh'}
        ``'linear'`` (default) or a symmetric ``'asinh'`` stretch
        (`matplotlib.colors.AsinhNorm`, linear within ``limit / 10``) that
        shows faint residuals and bright ones together.
    cmap : str or `~matplotlib.colors.Colormap`
        A diverging colour map (default ``"RdBu_r"``: red where ``test`` is
        brighter).
    title : str, optional
        Panel title (default ``"test - reference"``).
    figsize : (float, float), optional
        Figure size in inches (default: a 4.2-inch panel).
    wcs : bool
        Use `~astropy.visualization.wcsaxes.WCSAxes` when the reference has a
        celestial WCS (default True).
    mask_color : matplotlib colour, optional
        Paint pixels masked in either image in this colour (default: show
        their residuals).

    Returns
    -------
    fig : `~matplotlib.figure.Figure`
        ``fig.axes[0]`` is the image panel, ``fig.axes[1]`` the colour bar.

    Raises
    ------
    TypeError, ValueError, astropy.units.UnitsError
        As `plot_comparison`; also images of different shapes and a
        non-positive ``limit`` or an unknown ``stretch``.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from astro_unet import load_sample_image, plot_residuals, simulate_short_exposure
    >>> long = load_sample_image()
    >>> short = simulate_short_exposure(long, 4, seed=1)
    >>> fig = plot_residuals(long, short, limit=0.1)
    >>> fig.axes[0].images[0].norm.vmin, fig.axes[0].images[0].norm.vmax
    (-0.1, 0.1)
    >>> plt.close(fig)
    """
    from matplotlib.colors import AsinhNorm, Normalize

    ref, unit, ref_wcs, ref_mask = _image(reference, "reference")
    tst, _, _, tst_mask = _image(test, "test", unit)
    if ref.shape != tst.shape:
        raise ValueError(f"reference and test must have the same shape, got {ref.shape} "
                         f"and {tst.shape}.")
    if stretch not in ("linear", "asinh"):
        raise ValueError(f"stretch must be 'linear' or 'asinh', got {stretch!r}.")
    mask = None
    if ref_mask is not None or tst_mask is not None:
        mask = np.zeros(ref.shape, dtype=bool)
        for m in (ref_mask, tst_mask):
            if m is not None:
                mask |= m
    with np.errstate(divide="ignore", invalid="ignore"):
        resid = tst - ref
        if relative:
            resid = resid / np.abs(ref)
    resid[~np.isfinite(resid)] = np.nan
    values = _usable(resid, mask)
    if values.size == 0:
        raise ValueError("no pixel is finite and unmasked in both images.")
    if limit is None:
        lo, hi = _limits(values, _interval(interval))
        limit = max(abs(lo), abs(hi))
    else:
        limit = float(limit)
        if not np.isfinite(limit) or limit <= 0:
            raise ValueError(f"limit must be a positive number, got {limit!r}.")
    if stretch == "linear":
        norm = Normalize(vmin=-limit, vmax=limit)
    else:
        norm = AsinhNorm(linear_width=limit / 10.0, vmin=-limit, vmax=limit)

    use_wcs = wcs and ref_wcs is not None
    aspect = min(max(ref.shape[0] / ref.shape[1], 0.25), 4.0)
    left = _MARGIN["left_wcs"] if use_wcs else _MARGIN["left_pixel"]
    fig, rects, cbar_rect = _image_layout(1, aspect, [], left, figsize, True, panel=4.2)
    ax = _add_image_axes(fig, rects[0], ref_wcs, wcs)
    im = ax.imshow(_shown(resid, mask, mask_color), origin="lower",
                   cmap=_cmap_with_bad(cmap, mask_color), norm=norm,
                   interpolation="nearest", aspect="auto")
    ax.set_title("test - reference" if title is None else str(title))
    cbar = fig.colorbar(im, cax=fig.add_axes(cbar_rect))
    cbar.set_label("(test - reference) / |reference|" if relative
                   else "test - reference" + _unit_label(unit))
    return fig


# --------------------------------------------------------------------------- catalogues
def plot_flux_error(table, *, ax=None, percent=True, nbins=8, min_per_bin=5, label=None,
                    color=None, show_points=True):
    """
    Relative flux error of matched sources against their reference flux (paper Fig. 6).

    Every matched source with a positive reference flux is a point at
    ``(flux_ref, rel_flux_err)``; a line shows the running median in flux
    bins holding equal numbers of sources (at the bins' median flux), and a
    band the 16th-84th percentiles.  Call it
    twice on the same ``ax`` (with ``label=``) to compare, e.g., the noisy
    input and the denoised image against the same reference.

    Parameters
    ----------
    table : `~astropy.table.QTable`
        The table returned by `~astro_unet.photometric_comparison` (columns
        ``matched``, ``flux_ref``, ``rel_flux_err``).
    ax : `~matplotlib.axes.Axes`, optional
        Where to draw (default: a new figure).
    percent : bool
        Show the error in per cent (default) rather than as a fraction.
    nbins : int
        Largest number of bins of the running median (default 8).
    min_per_bin : int
        Fewest sources per bin (default 5): with ``N`` sources there are
        ``min(nbins, N // min_per_bin)`` bins, none when ``N < min_per_bin``.
    label : str, optional
        Legend label of the median line (a legend is drawn when given).
    color : matplotlib colour, optional
        Colour of points, line and band.
    show_points : bool
        Draw the individual sources (default True).

    Returns
    -------
    ax : `~matplotlib.axes.Axes`

    Raises
    ------
    TypeError
        ``table`` is not an astropy table.
    ValueError
        Missing columns, no matched source with a positive reference flux,
        or ``nbins``/``min_per_bin`` below 1.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from astro_unet import (load_sample_image, photometric_comparison,
    ...                         plot_flux_error, simulate_short_exposure)
    >>> long = load_sample_image()
    >>> short = simulate_short_exposure(long, 2, seed=1)
    >>> table, summary = photometric_comparison(long, short)
    >>> ax = plot_flux_error(table, label="simulated 401 s")
    >>> ax.get_xscale(), ax.get_ylabel()
    ('log', 'relative flux error [%]')
    >>> plt.close(ax.figure)
    """
    _check_table(table, ("matched", "flux_ref", "rel_flux_err"))
    nbins, min_per_bin = int(nbins), int(min_per_bin)
    if nbins < 1 or min_per_bin < 1:
        raise ValueError("nbins and min_per_bin must be at least 1.")
    flux, unit = _column(table, "flux_ref")
    rel, _ = _column(table, "rel_flux_err")
    use = np.asarray(table["matched"], dtype=bool) & np.isfinite(flux) & (flux > 0) \
        & np.isfinite(rel)
    if not use.any():
        raise ValueError("the table has no matched source with a positive reference flux.")
    flux, rel = flux[use], rel[use] * (100.0 if percent else 1.0)

    ax = _get_axes(ax)
    points = line = None
    if show_points:
        points = ax.scatter(flux, rel, s=12, alpha=0.5, color=color, linewidths=0)
        color = points.get_facecolor()[0][:3] if color is None else color
    # running median: bins holding equal numbers of sources (at least min_per_bin)
    order = np.argsort(flux)
    nb = min(nbins, flux.size // min_per_bin)
    if nb >= 1:
        groups = np.array_split(order, nb)
        centres = [np.median(flux[g]) for g in groups]
        lo, med, hi = np.array([np.percentile(rel[g], [16, 50, 84]) for g in groups]).T
        line, = ax.plot(centres, med, "-o", color=color, ms=4, lw=2,
                        label=label if label is not None else "running median")
        if nb > 1:
            ax.fill_between(centres, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    elif points is not None and label is not None:
        points.set_label(label)
    ax.axhline(0.0, color="0.3", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("reference flux" + _unit_label(unit))
    ax.set_ylabel("relative flux error [%]" if percent else "relative flux error")
    if label is not None and (line is not None or points is not None):
        ax.legend()
    return ax


def plot_pixel_distribution(*ccds, labels=None, bins=200, range=None, ax=None,
                            density=False):
    """
    Histograms of pixel values on a logarithmic count axis (paper Fig. 7).

    All images share the same bins, so a denoised image whose distribution
    matches the long exposure's (narrow background peak, same bright tail)
    is seen at a glance.

    Parameters
    ----------
    *ccds : `~astropy.nddata.NDData` (``CCDData``), `~astropy.units.Quantity` or array
        One or more 2-D images; masked and non-finite pixels are left out.
        Units are converted to the first image's.
    labels : sequence of str, optional
        Legend labels (default ``"image N"``).
    bins : int or array-like
        Number of bins (default 200) or bin edges.
    range : (float, float), optional
        Range of the bins (default: from the 0.1th to the 99.9th percentile
        of all images' pixels).
    ax : `~matplotlib.axes.Axes`, optional
        Where to draw (default: a new figure).
    density : bool
        Normalise each histogram to unit area (default: pixel counts).

    Returns
    -------
    ax : `~matplotlib.axes.Axes`

    Raises
    ------
    TypeError
        No image, or an image of an unknown type.
    ValueError
        Wrong number of labels, an image without finite pixels, a bad
        ``range``.
    astropy.units.UnitsError
        An image's unit cannot be converted to the first image's.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from astro_unet import load_sample_image, plot_pixel_distribution
    >>> long = load_sample_image()
    >>> ax = plot_pixel_distribution(long, labels=["802 s"])
    >>> ax.get_yscale(), ax.get_xlabel()
    ('log', 'pixel value [electron / s]')
    >>> plt.close(ax.figure)
    """
    if not ccds:
        raise TypeError("plot_pixel_distribution needs at least one image.")
    if labels is not None:
        labels = [str(v) for v in labels]
        if len(labels) != len(ccds):
            raise ValueError(f"got {len(labels)} labels for {len(ccds)} images.")
    values = []
    unit = None
    for i, image in enumerate(ccds):
        name = f"image {i + 1}"
        data, img_unit, _, mask = _image(image, name, unit)
        if i == 0:
            unit = img_unit
        values.append(_usable(data, mask))
    if range is None:
        lo, hi = np.percentile(np.concatenate(values), [0.1, 99.9])
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
    else:
        lo, hi = (float(v) for v in range)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"range must be (low, high) with low < high, got {range!r}.")
    ax = _get_axes(ax)
    for i, data in enumerate(values):
        ax.hist(data, bins=bins, range=(lo, hi), histtype="step", lw=1.5, density=density,
                label=labels[i] if labels is not None else f"image {i + 1}")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("pixel value" + _unit_label(unit))
    ax.set_ylabel("probability density" if density else "number of pixels")
    ax.legend()
    return ax


def plot_completeness(table, *, ax=None, bins=10, log=True, label=None, color=None,
                      level=None):
    """
    Fraction of reference sources recovered, against their reference flux.

    Uses `~astro_unet.completeness_curve` on the reference rows of the table
    (``matched`` marks the recovered ones).  Call it twice on the same ``ax``
    to compare images against the same reference.

    Parameters
    ----------
    table : `~astropy.table.QTable`
        The table returned by `~astro_unet.photometric_comparison` (columns
        ``id_ref``, ``matched``, ``flux_ref``).
    ax : `~matplotlib.axes.Axes`, optional
        Where to draw (default: a new figure).
    bins : int or array-like
        Number of flux bins or their edges (see
        `~astro_unet.completeness_curve`).
    log : bool
        Logarithmic flux bins and axis (default True).
    label : str, optional
        Legend label (a legend is drawn when given).
    color : matplotlib colour, optional
        Line colour.
    level : float, optional
        Draw a horizontal line at this completeness (e.g. 0.9).

    Returns
    -------
    ax : `~matplotlib.axes.Axes`

    Raises
    ------
    TypeError
        ``table`` is not an astropy table.
    ValueError
        Missing columns, no reference source, or the errors of
        `~astro_unet.completeness_curve`.

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from astro_unet import (load_sample_image, photometric_comparison,
    ...                         plot_completeness, simulate_short_exposure)
    >>> long = load_sample_image()
    >>> short = simulate_short_exposure(long, 4, seed=1)
    >>> table, summary = photometric_comparison(long, short)
    >>> ax = plot_completeness(table, bins=5)
    >>> ax.get_ylabel(), [float(v) for v in ax.get_ylim()]
    ('fraction of reference sources recovered', [0.0, 1.05])
    >>> plt.close(ax.figure)
    """
    from .metrics import completeness_curve

    _check_table(table, ("id_ref", "matched", "flux_ref"))
    is_ref = np.asarray(table["id_ref"]) >= 0
    if not is_ref.any():
        raise ValueError("the table has no reference source.")
    flux = table["flux_ref"][is_ref]
    detected = np.asarray(table["matched"], dtype=bool)[is_ref]
    centres, completeness, counts = completeness_curve(flux, detected, bins=bins, log=log)
    unit = getattr(centres, "unit", None)
    x = np.asarray(getattr(centres, "value", centres))
    keep = counts > 0
    ax = _get_axes(ax)
    ax.plot(x[keep], completeness[keep], "-o", ms=4, lw=2, color=color, label=label)
    if level is not None:
        ax.axhline(float(level), color="0.3", lw=0.8, ls="--")
    if log:
        ax.set_xscale("log")
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("reference flux" + _unit_label(unit))
    ax.set_ylabel("fraction of reference sources recovered")
    if label is not None:
        ax.legend()
    return ax
