# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_unet.visualization: key properties of the figures, no pixel comparisons."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import astropy.units as u  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.nddata import CCDData  # noqa: E402
from astropy.table import QTable  # noqa: E402
from astropy.visualization import (  # noqa: E402
    AsinhStretch,
    LinearStretch,
    PercentileInterval,
    ZScaleInterval,
)
from astropy.visualization.wcsaxes import WCSAxes  # noqa: E402
from astropy.wcs import WCS  # noqa: E402
from matplotlib.colors import AsinhNorm  # noqa: E402

from astro_unet import (  # noqa: E402
    completeness_curve,
    plot_comparison,
    plot_completeness,
    plot_flux_error,
    plot_pixel_distribution,
    plot_residuals,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _wcs(shape=(48, 64)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-1.1e-5, 1.1e-5]
    return w


def _image(seed=0, shape=(48, 64), level=10.0, noise=1.0, wcs=True, unit="electron/s",
           exptime=100.0):
    rng = np.random.default_rng(seed)
    data = level + noise * rng.standard_normal(shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    data += 200.0 * np.exp(-((yy - 20) ** 2 + (xx - 30) ** 2) / 4.0)
    meta = fits.Header({"EXPTIME": exptime}) if exptime is not None else fits.Header()
    return CCDData(data, unit=unit, wcs=_wcs(shape) if wcs else None, meta=meta)


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


def _snapshot(ccd):
    return (ccd.data.copy(), None if ccd.mask is None else ccd.mask.copy(),
            ccd.meta.copy(), ccd.unit)


def _same(ccd, snap):
    data, mask, meta, unit = snap
    assert np.array_equal(ccd.data, data)
    assert (ccd.mask is None and mask is None) or np.array_equal(ccd.mask, mask)
    assert ccd.meta == meta and ccd.unit == unit


# --------------------------------------------------------------------------- plot_comparison
def test_comparison_shares_zscale_limits_of_first_image():
    first = _image(0)
    noisy = _image(1, noise=5.0)
    smooth = _image(2, noise=0.1)
    snaps = [_snapshot(c) for c in (first, noisy, smooth)]
    fig = plot_comparison(first, noisy, smooth)
    panels = _image_axes(fig)
    assert len(panels) == 3
    assert len(fig.axes) == 4  # + one colour bar
    expected = ZScaleInterval().get_limits(first.data.ravel())
    for ax in panels:
        norm = ax.images[0].norm
        assert norm.vmin == pytest.approx(expected[0], rel=1e-12)
        assert norm.vmax == pytest.approx(expected[1], rel=1e-12)
        assert isinstance(norm.stretch, LinearStretch)
    # the limits differ from those of the other images: they really come from the first
    own = ZScaleInterval().get_limits(noisy.data.ravel())
    assert abs(own[1] - expected[1]) > 1.0
    for ccd, snap in zip((first, noisy, smooth), snaps):
        _same(ccd, snap)


def test_comparison_wcsaxes_when_celestial_wcs():
    fig = plot_comparison(_image(0), _image(1, wcs=False))
    a, b = _image_axes(fig)
    assert isinstance(a, WCSAxes)
    assert not isinstance(b, WCSAxes)
    assert b.get_xlabel() == "x [pixel]"
    fig = plot_comparison(_image(0), wcs=False)
    assert not isinstance(_image_axes(fig)[0], WCSAxes)


def test_comparison_titles_and_labels():
    fig = plot_comparison(_image(0), _image(1), titles=["short", "long"])
    assert [ax.get_title() for ax in _image_axes(fig)] == ["short", "long"]
    cbar = fig.axes[-1]
    assert cbar.get_ylabel() == "pixel value [electron / s]"
    fig = plot_comparison(_image(0, exptime=250.0), _image(1, exptime=None))
    assert [ax.get_title() for ax in _image_axes(fig)] == [
        "image 1 (EXPTIME 250 s)", "image 2"]


def test_comparison_units_and_arrays():
    first = _image(0)
    other = _image(1)
    per_minute = (other.data * 60.0) * u.electron / u.min
    fig = plot_comparison(first, per_minute, np.asarray(other.data), colorbar=False)
    panels = _image_axes(fig)
    assert len(fig.axes) == 3
    np.testing.assert_allclose(panels[1].images[0].get_array(), other.data)
    np.testing.assert_allclose(panels[2].images[0].get_array(), other.data)


def test_comparison_masked_pixels():
    first = _image(0)
    first.data[3, 4] = 1e6                      # a masked hot pixel
    first.mask = np.zeros(first.shape, dtype=bool)
    first.mask[3, 4] = True
    snap = _snapshot(first)
    good = first.data[~first.mask]
    expected = ZScaleInterval().get_limits(good)
    # default: masked pixels drawn with their values, left out of the limits
    fig = plot_comparison(first)
    image = _image_axes(fig)[0].images[0]
    assert (image.norm.vmin, image.norm.vmax) == pytest.approx(expected, rel=1e-12)
    assert np.ma.getdata(image.get_array())[3, 4] == 1e6
    # mask_color: masked pixels blank, painted in that colour
    fig = plot_comparison(first, mask_color="red")
    image = _image_axes(fig)[0].images[0]
    shown = np.ma.getdata(image.get_array())
    assert np.isnan(shown[3, 4]) and np.isfinite(shown).sum() == shown.size - 1
    assert tuple(image.get_cmap().get_bad()) == (1.0, 0.0, 0.0, 1.0)
    _same(first, snap)


def test_comparison_shared_axis_labels():
    fig = plot_comparison(_image(0), _image(1), _image(2, shape=(40, 64)))
    a, b, c = _image_axes(fig)
    assert a.coords[1].get_ticklabel_visible()
    assert not b.coords[1].get_ticklabel_visible()    # same grid as its left neighbour
    assert c.coords[1].get_ticklabel_visible()        # another shape
    fig = plot_comparison(_image(0), _image(1), wcs=False)
    a, b = _image_axes(fig)
    assert a.get_ylabel() == "y [pixel]" and b.get_ylabel() == ""
    fig = plot_comparison(_image(0), _image(1), figsize=(8, 3))
    assert tuple(fig.get_size_inches()) == (8.0, 3.0)
    # all panels inside the figure
    for ax in fig.axes:
        x0, y0, x1, y1 = ax.get_position().extents
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


def test_comparison_interval_and_stretch_options():
    first = _image(0)
    fig = plot_comparison(first, interval=99.0, stretch="asinh")
    norm = _image_axes(fig)[0].images[0].norm
    lo, hi = PercentileInterval(99.0).get_limits(first.data.ravel())
    assert (norm.vmin, norm.vmax) == pytest.approx((lo, hi))
    assert isinstance(norm.stretch, AsinhStretch)
    fig = plot_comparison(first, interval=(0.0, 50.0))
    norm = _image_axes(fig)[0].images[0].norm
    assert (norm.vmin, norm.vmax) == (0.0, 50.0)
    fig = plot_comparison(np.full((8, 8), 3.0), interval="minmax")  # flat image
    norm = _image_axes(fig)[0].images[0].norm
    assert (norm.vmin, norm.vmax) == (2.5, 3.5)


def test_comparison_errors():
    good = _image(0)
    with pytest.raises(TypeError, match="at least one image"):
        plot_comparison()
    with pytest.raises(ValueError, match="2 titles for 1 images"):
        plot_comparison(good, titles=["a", "b"])
    with pytest.raises(ValueError, match="2-D image"):
        plot_comparison(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="stretch must be"):
        plot_comparison(good, stretch="cubic")
    with pytest.raises(ValueError, match="interval must be"):
        plot_comparison(good, interval="iraf")
    with pytest.raises(ValueError, match="vmin < vmax"):
        plot_comparison(good, interval=(5, 1))
    with pytest.raises(u.UnitsError, match="cannot be converted"):
        plot_comparison(good, _image(1, unit="adu"))
    with pytest.raises(ValueError, match="no finite"):
        plot_comparison(np.full((4, 4), np.nan))
    with pytest.raises(TypeError, match="CCDData, NDData, Quantity or numpy array"):
        plot_comparison(object())
    with pytest.raises(ValueError, match="figsize"):
        plot_comparison(good, figsize=(1, 2, 3))
    assert plt.get_fignums() == []  # no half-made figure left behind


# --------------------------------------------------------------------------- plot_residuals
def test_residuals_symmetric_limits_and_values():
    ref = _image(0)
    test = _image(1)
    snaps = [_snapshot(ref), _snapshot(test)]
    fig = plot_residuals(ref, test)
    ax = fig.axes[0]
    assert isinstance(ax, WCSAxes)
    resid = test.data - ref.data
    lo, hi = ZScaleInterval().get_limits(resid.ravel())
    limit = max(abs(lo), abs(hi))
    norm = ax.images[0].norm
    assert (norm.vmin, norm.vmax) == pytest.approx((-limit, limit))
    np.testing.assert_allclose(ax.images[0].get_array(), resid)
    assert ax.get_title() == "test - reference"
    assert fig.axes[1].get_ylabel() == "test - reference [electron / s]"
    _same(ref, snaps[0])
    _same(test, snaps[1])


def test_residuals_options():
    ref, test = _image(0), _image(1)
    fig = plot_residuals(ref, test, limit=2.0, stretch="asinh", wcs=False, title="r")
    ax = fig.axes[0]
    assert not isinstance(ax, WCSAxes)
    assert isinstance(ax.images[0].norm, AsinhNorm)
    assert (ax.images[0].norm.vmin, ax.images[0].norm.vmax) == (-2.0, 2.0)
    assert ax.get_title() == "r"
    fig = plot_residuals(ref, test, relative=True, limit=0.5)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(),
                               (test.data - ref.data) / np.abs(ref.data))
    assert fig.axes[1].get_ylabel() == "(test - reference) / |reference|"
    # test converted to the reference unit
    fig = plot_residuals(ref, (test.data * 60.0) * u.electron / u.min, limit=1.0)
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), test.data - ref.data)


def test_residuals_mask_left_out_of_limits():
    ref, test = _image(0), _image(1)
    test.data[0, 0] = 1e5
    test.mask = np.zeros(test.shape, dtype=bool)
    test.mask[0, 0] = True
    fig = plot_residuals(ref, test)
    resid = test.data - ref.data
    lo, hi = ZScaleInterval().get_limits(resid[~test.mask])
    assert fig.axes[0].images[0].norm.vmax == pytest.approx(max(abs(lo), abs(hi)))
    fig = plot_residuals(ref, test, mask_color="k")
    assert np.isnan(np.ma.getdata(fig.axes[0].images[0].get_array())[0, 0])


def test_residuals_errors():
    ref = _image(0)
    with pytest.raises(ValueError, match="same shape"):
        plot_residuals(ref, _image(1, shape=(40, 64)))
    with pytest.raises(ValueError, match="positive number"):
        plot_residuals(ref, _image(1), limit=-1)
    with pytest.raises(ValueError, match="'linear' or 'asinh'"):
        plot_residuals(ref, _image(1), stretch="log")
    with pytest.raises(u.UnitsError):
        plot_residuals(ref, _image(1, unit="electron"))


# --------------------------------------------------------------------------- catalogue plots
def _table(n=40, seed=0):
    rng = np.random.default_rng(seed)
    flux = 10 ** rng.uniform(0, 3, n)
    rel = rng.normal(0, 0.05, n) / np.sqrt(flux / 10)
    matched = np.ones(n, dtype=bool)
    matched[:6] = False                  # missed reference sources
    rel[~matched] = np.nan
    flux_ref = np.concatenate([flux, [np.nan, np.nan]])   # + 2 spurious test sources
    table = QTable()
    table["id_ref"] = np.concatenate([np.arange(1, n + 1), [-1, -1]])
    table["matched"] = np.concatenate([matched, [False, False]])
    table["flux_ref"] = flux_ref * u.electron / u.s
    table["rel_flux_err"] = np.concatenate([rel, [np.nan, np.nan]])
    return table


def test_flux_error_points_and_running_median():
    table = _table()
    ax = plot_flux_error(table, label="denoised", nbins=4)
    use = np.asarray(table["matched"])
    flux = table["flux_ref"].value[use]
    rel = 100 * np.asarray(table["rel_flux_err"])[use]
    offsets = ax.collections[0].get_offsets()
    assert len(offsets) == use.sum() == 34
    np.testing.assert_allclose(np.sort(offsets[:, 0]), np.sort(flux))
    line = ax.get_lines()[0]
    groups = np.array_split(np.argsort(flux), 4)
    np.testing.assert_allclose(line.get_xdata(), [np.median(flux[g]) for g in groups])
    np.testing.assert_allclose(line.get_ydata(), [np.median(rel[g]) for g in groups])
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "reference flux [electron / s]"
    assert ax.get_ylabel() == "relative flux error [%]"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["denoised"]


def test_flux_error_options_and_shared_axes():
    table = _table()
    fig, ax = plt.subplots()
    out = plot_flux_error(table, ax=ax, percent=False, show_points=False, min_per_bin=100)
    assert out is ax
    assert len(ax.collections) == 0 and len(ax.get_lines()) == 1   # only the zero line
    assert ax.get_ylabel() == "relative flux error"
    plot_flux_error(table, ax=ax, label="a")
    plot_flux_error(_table(seed=1), ax=ax, label="b")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]


def test_flux_error_errors():
    table = _table()
    with pytest.raises(TypeError, match="astropy table"):
        plot_flux_error({"flux_ref": [1.0]})
    with pytest.raises(ValueError, match="rel_flux_err"):
        plot_flux_error(table[["matched", "flux_ref"]])
    nothing = table.copy()
    nothing["matched"] = False
    with pytest.raises(ValueError, match="no matched source"):
        plot_flux_error(nothing)
    with pytest.raises(ValueError, match="at least 1"):
        plot_flux_error(table, nbins=0)


def test_pixel_distribution_histograms():
    a, b = _image(0), _image(1, noise=3.0)
    ax = plot_pixel_distribution(a, b, labels=["long", "short"], bins=30, range=(5, 15))
    assert len(ax.patches) == 2      # one step histogram per image
    assert ax.get_yscale() == "log"
    assert ax.get_xlim() == (5.0, 15.0)
    assert ax.get_xlabel() == "pixel value [electron / s]"
    assert ax.get_ylabel() == "number of pixels"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["long", "short"]
    # the step outline of the first histogram reaches the tallest bin count
    counts, _ = np.histogram(a.data, bins=30, range=(5, 15))
    assert ax.patches[0].get_path().vertices[:, 1].max() == counts.max()


def test_pixel_distribution_defaults_and_errors():
    a = _image(0)
    ax = plot_pixel_distribution(a, a.data * 60 * u.electron / u.min, density=True)
    lo, hi = np.percentile(np.concatenate([a.data.ravel()] * 2), [0.1, 99.9])
    assert ax.get_xlim() == pytest.approx((lo, hi))
    assert ax.get_ylabel() == "probability density"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["image 1", "image 2"]
    with pytest.raises(TypeError, match="at least one image"):
        plot_pixel_distribution()
    with pytest.raises(ValueError, match="1 labels for 2 images"):
        plot_pixel_distribution(a, a, labels=["x"])
    with pytest.raises(ValueError, match="low < high"):
        plot_pixel_distribution(a, range=(3, 1))
    with pytest.raises(u.UnitsError):
        plot_pixel_distribution(a, _image(1, unit="adu"))


def test_completeness_curve_plotted():
    table = _table()
    ax = plot_completeness(table, bins=4, label="denoised", level=0.9)
    is_ref = np.asarray(table["id_ref"]) >= 0
    centres, comp, counts = completeness_curve(
        table["flux_ref"][is_ref], np.asarray(table["matched"])[is_ref], bins=4)
    line = ax.get_lines()[0]
    keep = counts > 0
    np.testing.assert_allclose(line.get_xdata(), centres.value[keep])
    np.testing.assert_allclose(line.get_ydata(), comp[keep])
    assert ax.get_lines()[1].get_ydata()[0] == 0.9
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "reference flux [electron / s]"
    assert ax.get_ylabel() == "fraction of reference sources recovered"
    assert tuple(ax.get_ylim()) == (0.0, 1.05)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["denoised"]


def test_completeness_errors():
    table = _table()
    with pytest.raises(ValueError, match="id_ref"):
        plot_completeness(table[["matched", "flux_ref"]])
    no_ref = table[np.asarray(table["id_ref"]) < 0]
    with pytest.raises(ValueError, match="no reference source"):
        plot_completeness(no_ref)
    with pytest.raises(TypeError, match="astropy table"):
        plot_completeness([1, 2])
