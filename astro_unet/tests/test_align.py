# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
`astro_unet.align_pair` on synthetic star fields rendered on two WCS grids.

The same stars (fixed sky positions and fluxes) are drawn as pixel-integrated
Gaussians on a short-exposure grid and on a long-exposure grid that is
shifted by a known sub-pixel amount, rotated and has another pixel scale.
"""

from copy import deepcopy

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty, VarianceUncertainty
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import erf

from astro_unet import AlignedPair, align_pair
from astro_unet.photometry import detect_and_measure, match_pixels

SHAPE = (96, 96)
SCALE = 0.1          # arcsec / px of the short grid
PSF_SIGMA = 0.15     # arcsec (1.5 short pixels)
SKY = 10.0           # electron / s / arcsec**2 ... times the pixel area below
CRVAL = (150.0, 2.0)


def tan_wcs(crpix, *, scale=SCALE, rotation=0.0, crval=CRVAL):
    """A TAN WCS with a CD matrix: ``scale`` arcsec/px, rotated by ``rotation`` degrees."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = list(crpix)
    c, s = np.cos(np.radians(rotation)), np.sin(np.radians(rotation))
    w.wcs.cd = scale / 3600 * np.array([[-c, s], [s, c]])
    return w


def star_catalogue(seed=3, n=5, flux=(3000.0, 30000.0)):
    """Sky positions (from a jittered grid on the short grid) and total fluxes."""
    rng = np.random.default_rng(seed)
    x, y = (a.ravel() for a in np.meshgrid(np.linspace(14, SHAPE[1] - 15, n),
                                           np.linspace(14, SHAPE[0] - 15, n)))
    x = x + rng.uniform(-2, 2, x.size)
    y = y + rng.uniform(-2, 2, y.size)
    sky = tan_wcs((48.5, 48.5)).pixel_to_world(x, y)
    return sky, 10 ** rng.uniform(*np.log10(flux), x.size)


STARS = star_catalogue()


def render(wcs, shape, *, noise, seed, sky_level=SKY, stars=STARS):
    """Stars (electron/s in total) + sky + Gaussian noise, per pixel of ``wcs``."""
    coords, flux = stars
    scale = np.sqrt(proj_plane_pixel_area(wcs)) * 3600   # arcsec / px
    sigma = np.sqrt(2) * PSF_SIGMA / scale
    x, y = wcs.world_to_pixel(coords)
    ny, nx = shape
    ex, ey = np.arange(nx + 1) - 0.5, np.arange(ny + 1) - 0.5
    image = np.full(shape, sky_level * scale ** 2)
    for xi, yi, fi in zip(x, y, flux):
        image += fi * np.outer(np.diff(0.5 * erf((ey - yi) / sigma)),
                               np.diff(0.5 * erf((ex - xi) / sigma)))
    return image + np.random.default_rng(seed).normal(0.0, noise, shape)


def make_pair(shift=(0.3, -0.7), *, rotation=0.0, scale_long=SCALE, shape_long=SHAPE,
              noise=(3.0, 1.0), unit="electron/s", short_kwargs=None, long_kwargs=None):
    """
    A short and a long exposure.  The long grid's reference pixel is moved by
    ``shift``: a star at (x, y) in the short grid is at (x, y) + shift in the
    long grid (for equal scales and no rotation).
    """
    centre = np.array([48.5, 48.5])
    long_centre = (np.array(shape_long[::-1]) + 1) / 2
    w_short = tan_wcs(centre)
    w_long = tan_wcs(long_centre + np.asarray(shift), scale=scale_long, rotation=rotation)
    short = CCDData(render(w_short, SHAPE, noise=noise[0], seed=1), unit=unit, wcs=w_short,
                    **(short_kwargs or {}))
    long = CCDData(render(w_long, shape_long, noise=noise[1], seed=2), unit=unit, wcs=w_long,
                   **(long_kwargs or {}))
    return short, long


def offset(a, b, radius=3.0):
    """Median (dx, dy) of the stars of ``b`` minus those of ``a`` (same-shape arrays)."""
    ca, cb = detect_and_measure(np.asarray(a, float)), detect_and_measure(np.asarray(b, float))
    i, j, _ = match_pixels(ca["x"], ca["y"], cb["x"], cb["y"], radius)
    assert len(i) >= 20
    return np.median(cb["x"][j] - ca["x"][i]), np.median(cb["y"][j] - ca["y"][i])


@pytest.fixture(scope="module")
def shifted():
    return make_pair()


@pytest.fixture(scope="module")
def shifted_pair(shifted):
    return align_pair(*shifted)


@pytest.fixture(scope="module")
def rotated():
    """Long: 0.08 arcsec pixels, rotated by 2 degrees, shifted, and larger."""
    return make_pair(shift=(0.3, -0.7), rotation=2.0, scale_long=0.08, shape_long=(128, 128))


# --------------------------------------------------------------------------- alignment
def test_known_shift_before_and_after(shifted, shifted_pair):
    short, long = shifted
    dx, dy = offset(short.data, long.data)
    assert abs(dx - 0.3) < 0.05 and abs(dy + 0.7) < 0.05    # the shift is there before
    pair = shifted_pair
    assert isinstance(pair, AlignedPair) and pair.grid == "short"
    assert pair.n_matched == 25
    assert abs(pair.offset[0]) <= 0.05 and abs(pair.offset[1]) <= 0.05
    assert pair.offset_median <= 0.05
    assert abs(pair.flux_ratio - 1) < 0.01
    # the measurement of the report agrees with an independent one
    assert_allclose(offset(pair.short.data, pair.long.data), pair.offset, atol=0.02)


@pytest.mark.parametrize("grid", ["short", "long"])
@pytest.mark.parametrize("method", ["interp", "exact", "adaptive"])
def test_rotation_and_pixel_scale(rotated, grid, method):
    short, long = rotated
    # exact (area means) and adaptive (anti-aliasing kernel) resampling widen the
    # PSF of an image put on finer pixels (grid="long": 0.9 % of the flux leaves
    # the r = 5 px aperture with "exact"); a larger aperture keeps the flux
    radius = 5.0 if method == "interp" else 8.0
    pair = align_pair(short, long, grid=grid, method=method, aperture_radius=radius)
    target = short if grid == "short" else long
    assert pair.short.shape == pair.long.shape == target.shape
    assert pair.n_matched == 25
    assert abs(pair.offset[0]) <= 0.05 and abs(pair.offset[1]) <= 0.05, pair
    assert abs(pair.flux_ratio - 1) < 0.01, pair


@pytest.mark.parametrize("order", ["bilinear", "biquadratic", 3])
def test_interpolation_orders(shifted, order):
    pair = align_pair(*shifted, order=order)
    assert abs(pair.offset[0]) <= 0.05 and abs(pair.offset[1]) <= 0.05
    assert abs(pair.flux_ratio - 1) < 0.01


@pytest.mark.parametrize("method", ["interp", "exact", "adaptive"])
@pytest.mark.parametrize("grid", ["short", "long"])
def test_total_flux_kept_when_the_pixel_scale_changes(method, grid):
    # long: pixels half as large (a quarter of the area), covering more sky
    short, long = make_pair(shift=(0.0, 0.0), scale_long=0.05, shape_long=(224, 224),
                            noise=(1e-3, 1e-3))
    short.data -= SKY * SCALE ** 2
    long.data -= SKY * 0.05 ** 2
    pair = align_pair(short, long, grid=grid, method=method)
    moved, source = (pair.long, long) if grid == "short" else (pair.short, short)
    if grid == "short":
        assert not moved.mask[10:-10, 10:-10].any()
    total = np.sum(STARS[1])
    assert_allclose(np.nansum(np.where(moved.mask, 0, moved.data)), total, rtol=2e-3)
    assert_allclose(np.sum(source.data), total, rtol=2e-3)
    area = 4.0 if grid == "short" else 0.25
    assert_allclose(moved.meta["ALAREA"], area, rtol=1e-6)


def test_output_wcs_is_the_grid(rotated):
    short, long = rotated
    for grid, target in (("short", short), ("long", long)):
        pair = align_pair(short, long, grid=grid)
        for ccd in (pair.short, pair.long):
            assert ccd.shape == target.shape
            assert ccd.wcs.to_header() == target.wcs.to_header()
            assert ccd.wcs is not target.wcs
        assert_array_equal(getattr(pair, grid).data, target.data)   # not resampled


def test_units_kept_and_nddata_in_ccddata_out(shifted):
    short, long = shifted
    long_nd = NDData(long.data * 1000, unit="electron/ks", wcs=long.wcs)
    pair = align_pair(short, long_nd)
    assert isinstance(pair.long, CCDData) and pair.long.unit == u.Unit("electron/ks")
    assert pair.short.unit == u.electron / u.s
    assert abs(pair.flux_ratio - 1) < 0.01


# --------------------------------------------------------------------------- masks, uncertainty
def test_coverage_edges_and_masked_pixels():
    mask_long = np.zeros(SHAPE, bool)
    mask_long[40, 60] = True                        # one bad pixel of the long exposure
    short, long = make_pair(shift=(5.3, -3.7), long_kwargs=dict(mask=mask_long))
    short.data[70, 20] = np.nan                     # one bad pixel of the short exposure
    pair = align_pair(short, long)
    assert_array_equal(pair.short.mask, pair.long.mask)
    mask = pair.long.mask
    # long pixel x = x_short + 5.3 must be <= 95.5, y = y_short - 3.7 >= -0.5
    ys, xs = np.mgrid[:SHAPE[0], :SHAPE[1]]
    uncovered = (xs + 5.3 > SHAPE[1] - 0.5) | (ys - 3.7 < -0.5)
    assert mask[uncovered].all()
    assert np.isnan(pair.long.data[uncovered]).all()
    # the bad long pixel lands at (60 - 5.3, 40 + 3.7): masked, with its 4 x 4 stencil
    assert mask[43:45, 54:56].all()
    inside = ~uncovered
    inside[70, 20] = False
    assert mask[inside].sum() == 16
    assert mask[70, 20]
    assert not mask[10:30, 10:30].any()
    assert np.isnan(pair.short.data[70, 20])     # the kept image keeps its data


def test_masked_pixel_does_not_spread_through_the_spline(shifted):
    short, long = shifted
    bad = long.data.copy()
    bad[50, 50] = 1e9                               # a masked cosmic ray
    mask = np.zeros(SHAPE, bool)
    mask[50, 50] = True
    pair = align_pair(short, CCDData(bad, unit=long.unit, wcs=long.wcs, mask=mask))
    reference = align_pair(short, long)
    good = ~pair.long.mask
    assert_allclose(pair.long.data[good], reference.long.data[good], atol=20.0)


@pytest.mark.parametrize("method", ["interp", "exact"])
def test_uncertainty_resampled_as_variance(method):
    sigma = np.full(SHAPE, 0.5)
    short, long = make_pair(long_kwargs=dict(uncertainty=StdDevUncertainty(sigma)),
                            short_kwargs=dict(uncertainty=VarianceUncertainty(np.full(SHAPE, 9.))))
    pair = align_pair(short, long, method=method)
    assert isinstance(pair.long.uncertainty, StdDevUncertainty)
    good = ~pair.long.mask
    assert_allclose(pair.long.uncertainty.array[good], 0.5, rtol=1e-6)
    # the kept image keeps its uncertainty as it was
    assert isinstance(pair.short.uncertainty, VarianceUncertainty)
    assert_array_equal(pair.short.uncertainty.array, 9.0)
    # grid="long": the short exposure's variance is resampled, given as a std
    pair = align_pair(short, long, grid="long", method=method)
    assert_allclose(pair.short.uncertainty.array[~pair.short.mask], 3.0, rtol=1e-6)


def test_uncertainty_scales_with_the_pixel_area():
    short, long = make_pair(scale_long=0.05, shape_long=(224, 224),
                            long_kwargs=dict(uncertainty=StdDevUncertainty(0.5)))
    interp = align_pair(short, long)                          # 4 long pixels per pixel
    assert_allclose(interp.long.uncertainty.array[~interp.long.mask], 4 * 0.5, rtol=1e-6)
    exact = align_pair(short, long, method="exact")            # their average
    assert_allclose(exact.long.uncertainty.array[~exact.long.mask], 2 * 0.5, rtol=1e-3)


def test_inputs_not_modified(shifted):
    short, long = shifted
    long = CCDData(long.data.copy(), unit=long.unit, wcs=long.wcs, mask=long.data > 500,
                   uncertainty=StdDevUncertainty(np.ones(SHAPE)),
                   meta=fits.Header({"EXPTIME": 100.0}))
    before = deepcopy(long), deepcopy(short)
    align_pair(short, long)
    for now, then in zip((long, short), before):
        assert_array_equal(now.data, then.data)
        assert now.wcs.to_header() == then.wcs.to_header()
        assert dict(now.meta) == dict(then.meta)
    assert_array_equal(long.mask, before[0].mask)
    assert_array_equal(long.uncertainty.array, 1.0)


# --------------------------------------------------------------------------- metadata
def test_header_history_and_keywords(shifted):
    short, long = shifted
    header = fits.Header({"EXPTIME": 100.0, "OBJECT": "field"})
    header.update(long.wcs.to_header())
    header["CD1_1"] = long.wcs.wcs.cd[0, 0]        # a stale CD matrix in the header
    long = CCDData(long.data, unit=long.unit, wcs=long.wcs, meta=header)
    short = CCDData(short.data, unit=short.unit, wcs=short.wcs,
                    meta={"EXPTIME": 10.0, "OBJECT": "field"})
    pair = align_pair(short, long)
    meta = pair.long.meta
    assert isinstance(meta, fits.Header)
    assert meta["EXPTIME"] == 100.0 and meta["OBJECT"] == "field"
    assert meta["ALGRID"] == "short" and meta["ALRESAMP"] is True
    assert meta["ALMETHOD"] == "reproject_interp" and meta["ALORDER"] == "bicubic"
    assert meta["ALNMATCH"] == pair.n_matched
    assert_allclose(meta["ALDX"], pair.offset[0])
    assert_allclose(meta["ALFLUXR"], pair.flux_ratio)
    history = "\n".join(str(h) for h in meta["HISTORY"])
    assert "align_pair(grid='short'" in history and "resampled" in history
    # the WCS keywords are those of the grid now, without the stale CD matrix
    assert "CD1_1" not in meta
    assert_allclose(meta["CRPIX1"], short.wcs.wcs.crpix[0])
    # dict metadata: plain values, no HISTORY
    assert pair.short.meta["ALRESAMP"] is False and "HISTORY" not in pair.short.meta
    assert pair.short.meta["ALNMATCH"] == pair.n_matched
    # a FITS round trip keeps one consistent WCS
    hdu = pair.long.to_hdu()[0]
    assert_allclose(WCS(hdu.header).wcs.crpix, short.wcs.wcs.crpix)


def test_repr_and_str(shifted_pair):
    text = repr(shifted_pair)
    assert text.startswith("<AlignedPair grid='short' shape=(96, 96)")
    assert "n_matched=25" in text and "flux_ratio=" in text
    assert "matched stars:" in str(shifted_pair) and "long exposure was resampled" in str(
        shifted_pair)


# --------------------------------------------------------------------------- units
def test_counts_are_compared_per_second():
    short, long = make_pair()
    short = CCDData(short.data * 10, unit="electron", wcs=short.wcs, meta={"EXPTIME": 10})
    long = CCDData(long.data * 100, unit="electron", wcs=long.wcs, meta={"EXPTIME": 100})
    pair = align_pair(short, long)
    assert abs(pair.flux_ratio - 1) < 0.01
    assert pair.long.unit == u.electron
    # counts against a rate
    rate = make_pair()[1]
    assert abs(align_pair(short, rate).flux_ratio - 1) < 0.01


def test_counts_without_exposure_time_warn():
    short, long = make_pair()
    short = CCDData(short.data * 10, unit="electron", wcs=short.wcs)
    with pytest.warns(AstropyUserWarning, match="short in counts without EXPTIME"):
        pair = align_pair(short, long)
    assert np.isnan(pair.flux_ratio) and pair.n_matched == 25


def test_surface_brightness_is_not_scaled():
    short, long = make_pair(scale_long=0.05, shape_long=(224, 224), unit="MJy/sr",
                            noise=(1e-3, 1e-3))
    pair = align_pair(short, long)
    assert "ALAREA" not in pair.long.meta
    # the values (rendered per pixel here) are interpolated, not multiplied by the
    # pixel-area ratio of 4: aperture sums on the common grid keep the long's 1/4
    assert_allclose(pair.flux_ratio, 0.25, rtol=0.01)


# --------------------------------------------------------------------------- quality warnings
def test_too_few_stars_warn():
    stars = star_catalogue(n=1)
    w_short, w_long = tan_wcs((48.5, 48.5)), tan_wcs((48.8, 47.8))
    short = CCDData(render(w_short, SHAPE, noise=3.0, seed=1, stars=stars), unit="electron/s",
                    wcs=w_short)
    long = CCDData(render(w_long, SHAPE, noise=1.0, seed=2, stars=stars), unit="electron/s",
                   wcs=w_long)
    with pytest.warns(AstropyUserWarning, match="Only 1 stars matched"):
        pair = align_pair(short, long)
    assert pair.n_matched == 1
    assert np.isnan(pair.offset).all() and np.isnan(pair.offset_median)
    assert np.isnan(pair.flux_ratio)
    assert "ALDX" not in pair.long.meta and pair.long.meta["ALNMATCH"] == 1
    repr(pair), str(pair)                      # NaN prints


def test_wrong_wcs_shows_in_the_report(shifted):
    short, long = shifted
    wrong = long.wcs.deepcopy()
    wrong.wcs.crpix = wrong.wcs.crpix + [1.0, 0.0]   # one pixel off
    pair = align_pair(short, CCDData(long.data, unit=long.unit, wcs=wrong))
    assert abs(pair.offset[0] + 1.0) < 0.05 and abs(pair.offset[1]) < 0.05


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("which", ["short", "long"])
def test_missing_wcs_names_the_argument(shifted, which):
    short, long = shifted
    bare = CCDData(np.ones(SHAPE), unit="electron/s")
    args = (bare, long) if which == "short" else (short, bare)
    with pytest.raises(ValueError, match=f"^{which} has no WCS"):
        align_pair(*args)


def test_non_celestial_wcs(shifted):
    short, long = shifted
    linear = WCS(naxis=2)
    with pytest.raises(ValueError, match="long has a WCS without celestial axes"):
        align_pair(short, CCDData(long.data, unit=long.unit, wcs=linear))


def test_no_overlap(shifted):
    short, long = shifted
    far = tan_wcs((48.5, 48.5), crval=(151.0, 2.0))
    with pytest.raises(ValueError, match="do not overlap"):
        align_pair(short, CCDData(long.data, unit=long.unit, wcs=far))


@pytest.mark.parametrize("kwargs, message", [
    (dict(grid="both"), "grid must be one of"),
    (dict(grid=None), "grid must be one of"),
    (dict(method="drizzle"), "method must be one of"),
    (dict(order="spline"), "order must be one of"),
    (dict(order=5), "order must be one of"),
    (dict(match_radius=-1), "match_radius must be a finite positive"),
    (dict(min_area=0), "min_area must be a positive integer"),
])
def test_bad_options(shifted, kwargs, message):
    with pytest.raises(ValueError, match=message):
        align_pair(*shifted, **kwargs)


def test_match_radius_in_arcsec_refused(shifted):
    with pytest.raises(u.UnitsError, match="match_radius must be convertible to pix"):
        align_pair(*shifted, match_radius=0.3 * u.arcsec)


def test_not_2d(shifted):
    short, long = shifted
    cube = CCDData(np.ones((2,) + SHAPE), unit="electron/s")
    with pytest.raises(ValueError, match="short must be a 2-D image"):
        align_pair(cube, long)


@pytest.mark.parametrize("short_unit, long_unit", [
    ("electron", "adu"), ("electron/s", "Jy"), ("adu/s", "electron"),
])
def test_incompatible_units(shifted, short_unit, long_unit):
    short, long = shifted
    with pytest.raises(u.UnitsError, match="cannot be compared"):
        align_pair(CCDData(short.data, unit=short_unit, wcs=short.wcs),
                   CCDData(long.data, unit=long_unit, wcs=long.wcs))


def test_no_unit(shifted):
    short, long = shifted
    with pytest.raises(u.UnitsError, match="long has no unit"):
        align_pair(short, NDData(long.data, wcs=long.wcs))


def test_not_nddata(shifted):
    with pytest.raises(TypeError, match="long must be an astropy.nddata"):
        align_pair(shifted[0], shifted[1].data)
