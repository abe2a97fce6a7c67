# Licensed under a 3-clause BSD style license - see LICENSE.rst
from copy import deepcopy

import numpy as np
import pytest
import astropy.units as u
from astropy.nddata import CCDData, InverseVariance, NDData, StdDevUncertainty
from astropy.wcs import WCS
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import erf
from scipy.spatial import KDTree

from astro_unet.photometry import _detect_and_measure, _match_pixels, photometric_comparison

SHAPE = (160, 160)
SIGMA_PSF = 1.5
# fraction of a Gaussian (sigma 1.5 px) inside the r = 5 px aperture
EE5 = 1 - np.exp(-(5.0**2) / (2 * SIGMA_PSF**2))


def star_grid(n_x=6, n_y=5, seed=1, flux=(400.0, 8000.0)):
    """Known stars on a jittered grid (no blends), log-uniform fluxes."""
    rng = np.random.default_rng(seed)
    ny, nx = SHAPE
    x, y = [a.ravel() for a in np.meshgrid(np.linspace(16, nx - 17, n_x),
                                           np.linspace(16, ny - 17, n_y))]
    x = x + rng.uniform(-3, 3, x.size)
    y = y + rng.uniform(-3, 3, y.size)
    f = 10 ** rng.uniform(np.log10(flux[0]), np.log10(flux[1]), x.size)
    return x, y, f


def render(x, y, flux):
    """Pixel-integrated circular Gaussian stars."""
    ny, nx = SHAPE
    img = np.zeros(SHAPE)
    ex, ey = np.arange(nx + 1) - 0.5, np.arange(ny + 1) - 0.5
    s2 = np.sqrt(2) * SIGMA_PSF
    for xi, yi, fi in zip(x, y, flux):
        img += fi * np.outer(np.diff(0.5 * erf((ey - yi) / s2)),
                             np.diff(0.5 * erf((ex - xi) / s2)))
    return img


def field(x, y, flux, *, noise=1.0, sky=5.0, seed=0, unit="electron/s", **kwargs):
    rng = np.random.default_rng(seed)
    data = render(x, y, flux) + sky + rng.normal(0, noise, SHAPE)
    return CCDData(data, unit=unit, **kwargs)


def tan_wcs(crpix=(80.0, 80.0)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = list(crpix)
    w.wcs.cdelt = [-0.04 / 3600, 0.04 / 3600]
    w.wcs.cunit = ["deg", "deg"]
    return w


@pytest.fixture(scope="module")
def stars():
    return star_grid()


@pytest.fixture(scope="module")
def reference(stars):
    return field(*stars, seed=0)


def nearest_truth(xd, yd, stars):
    x, y, _ = stars
    dist, idx = KDTree(np.column_stack([x, y])).query(np.column_stack([xd, yd]))
    return dist, idx


# --------------------------------------------------------------------------- detection & photometry
def test_detections_match_truth(stars, reference):
    x, y, f = stars
    table, summary = photometric_comparison(reference, reference)
    assert summary["n_reference"] == len(x) == len(table)
    dist, idx = nearest_truth(table["x_ref"], table["y_ref"], stars)
    # every star found once, centroid within 0.2 px
    assert sorted(idx) == list(range(len(x)))
    assert dist.max() < 0.2
    # aperture fluxes agree with the truth within their errors (and 3 % for bright stars)
    flux = table["flux_ref"].to_value(u.electron / u.s)
    err = table["flux_ref_err"].to_value(u.electron / u.s)
    truth = f[idx] * EE5
    assert np.all(np.abs(flux - truth) < 5 * err)
    bright = truth > 2000
    assert bright.sum() >= 5
    assert_allclose(flux[bright], truth[bright], rtol=0.03)
    assert table["flux_ref"].unit == u.electron / u.s


def test_identical_images(reference):
    table, s = photometric_comparison(reference, reference)
    assert s["n_matched"] == s["n_test"] == s["n_reference"] == 30
    assert s["tpr"] == s["precision"] == s["f_measure"] == 1.0
    assert s["rfe_mean"] == s["rfe_median"] == 0.0
    assert s["psnr"] == np.inf and s["ssim"] == pytest.approx(1.0) and s["kl"] == 0.0
    assert_array_equal(table["id_ref"], table["id_test"])
    assert np.all(table["matched"]) and np.all(table["separation"] == 0)
    assert s["match"] == "pixel" and s["threshold"] == "self"
    assert_allclose(s["background_rms_ref"].value, 1.0, rtol=0.1)


def test_matching_pairs_the_same_star(stars, reference):
    # an independent noise realisation: each match must link the same known star
    other = field(*stars, seed=11)
    table, s = photometric_comparison(reference, other)
    assert s["tpr"] == 1.0 and s["precision"] == 1.0
    _, i_ref = nearest_truth(table["x_ref"], table["y_ref"], stars)
    _, i_tst = nearest_truth(table["x_test"], table["y_test"], stars)
    assert_array_equal(i_ref, i_tst)
    assert table["separation"].max() < 0.3
    # RFE of two equally noisy images: percent level, consistent with its statistics
    assert 0 < s["rfe_mean"] < 3 and 0 < s["rfe_median"] <= s["rfe_mean"] * 1.5
    assert s["rfe_err"] < s["rfe_mean"]
    assert_allclose(s["rfe_mean"], 100 * np.mean(np.abs(table["rel_flux_err"])))


def test_shifted_by_one_pixel_still_matches(stars, reference):
    x, y, f = stars
    shifted = field(x + 1.0, y, f, seed=0)
    table, s = photometric_comparison(reference, shifted)
    assert s["tpr"] == 1.0 and s["precision"] == 1.0
    assert_allclose(table["separation"], 1.0, atol=0.15)
    assert_allclose(table["x_test"] - table["x_ref"], 1.0, atol=0.15)
    assert s["rfe_median"] < 2.0
    # with a radius below the shift nothing matches
    _, s_tight = photometric_comparison(reference, shifted, match_radius=0.5)
    assert s_tight["n_matched"] == 0 and s_tight["tpr"] == 0.0 and s_tight["f_measure"] == 0.0


def test_half_of_the_stars_missing(stars, reference):
    x, y, f = stars
    keep = np.arange(len(x)) % 2 == 0
    half = field(x[keep], y[keep], f[keep], seed=5)
    table, s = photometric_comparison(reference, half)
    assert s["n_test"] == keep.sum() == 15
    assert s["tpr"] == pytest.approx(0.5) and s["precision"] == 1.0
    assert s["f_measure"] == pytest.approx(2 * 0.5 / 1.5)
    assert s["n_missed"] == 15 and s["n_spurious"] == 0
    # the unmatched rows are exactly the removed stars, after the matched ones
    unmatched = table[~table["matched"]]
    assert np.all(table["matched"][:15]) and len(unmatched) == 15
    assert np.all(unmatched["id_test"] == -1) and np.all(np.isnan(unmatched["x_test"]))
    _, idx = nearest_truth(unmatched["x_ref"], unmatched["y_ref"], stars)
    assert set(idx) == set(np.nonzero(~keep)[0])


def test_pure_noise_gives_empty_results():
    rng = np.random.default_rng(3)
    noise = CCDData(rng.normal(5.0, 1.0, SHAPE), unit="electron/s")
    table, s = photometric_comparison(noise, noise, input=noise)
    assert len(table) == 0
    for name in ("id_ref", "flux_ref", "flux_test", "snr_input", "rel_flux_err"):
        assert name in table.colnames
    assert s["n_reference"] == s["n_test"] == s["n_matched"] == 0
    assert np.isnan(s["tpr"]) and np.isnan(s["precision"]) and np.isnan(s["f_measure"])
    assert np.isnan(s["rfe_mean"]) and np.isnan(s["snr_gain"])


def test_empty_test_against_full_reference(reference):
    rng = np.random.default_rng(4)
    noise = CCDData(rng.normal(5.0, 1.0, SHAPE), unit="electron/s")
    table, s = photometric_comparison(reference, noise)
    assert s["n_test"] == 0 and s["tpr"] == 0.0 and s["f_measure"] == 0.0
    assert np.isnan(s["precision"]) and len(table) == 30


def test_threshold_self_versus_reference(stars):
    x, y, f = stars
    rng = np.random.default_rng(9)
    # 10 faint stars (peak ~4 sigma of the reference noise) between the bright ones
    xf = x[:10] + 12.0
    yf = y[:10] + 12.0
    ff = np.full(10, 60.0)
    ref = field(np.r_[x, xf], np.r_[y, yf], np.r_[f, ff], noise=1.0, seed=1)
    # a denoised-like test image: same scene, 5x lower noise
    den = field(np.r_[x, xf], np.r_[y, yf], np.r_[f, ff], noise=0.2,
                seed=int(rng.integers(100)))
    _, s_self = photometric_comparison(ref, den, threshold="self")
    _, s_ref = photometric_comparison(ref, den, threshold="reference")
    assert s_self["n_reference"] == s_ref["n_reference"] == 30
    # its own (low) rms: the faint stars are detected in the test only
    assert s_self["n_test"] == 40 and s_self["precision"] == pytest.approx(0.75)
    # the reference's absolute threshold: the same 30 stars as in the reference
    assert s_ref["n_test"] == 30 and s_ref["precision"] == 1.0
    assert s_self["tpr"] == s_ref["tpr"] == 1.0
    assert s_self["background_rms_test"] < 0.3 * s_self["background_rms_ref"]


def test_snr_gain_with_input(stars):
    x, y, f = stars
    ref = field(x, y, f, noise=0.5, seed=1)
    noisy = field(x, y, f, noise=2.0, seed=2)
    test = field(x, y, f, noise=0.5, seed=3)
    table, s = photometric_comparison(ref, test, input=noisy)
    # background-only errors (no EXPTIME): SNR ~ flux / rms, so the gain is ~ 2.0 / 0.5
    assert s["snr_gain"] == pytest.approx(4.0, rel=0.1)
    m = table["matched"]
    assert_allclose(np.mean(table["snr_ratio"][m]), s["snr_gain"])
    assert_allclose(table["flux_input"][m], table["flux_ref"][m], rtol=0.1)
    assert table["flux_input"].unit == u.electron / u.s


def test_flux_error_models(stars):
    x, y, f = stars
    area = np.pi * 5.0**2
    # background rms only
    t0, _ = photometric_comparison(field(x, y, f, seed=1), field(x, y, f, seed=2),
                                   errors="declared")
    assert_allclose(t0["flux_ref_err"].value, np.sqrt(area), rtol=0.05)
    assert "background rms only" in t0.meta["error_model"]["reference"]
    D = dict(errors="declared")
    # with EXPTIME: + source Poisson noise F / t (electron/s data)
    meta = {"EXPTIME": 10.0}
    t1, _ = photometric_comparison(field(x, y, f, seed=1, meta=meta),
                                   field(x, y, f, seed=2, meta=meta), **D)
    expected = np.sqrt(area * 1.0 + t1["flux_ref"].value / 10.0)
    assert_allclose(t1["flux_ref_err"].value, expected, rtol=0.05)
    assert "Poisson (10 electron per" in t1.meta["error_model"]["reference"]
    # exposure_time per image overrides the header
    t2, _ = photometric_comparison(field(x, y, f, seed=1, meta=meta),
                                   field(x, y, f, seed=2, meta=meta),
                                   exposure_time={"reference": 1000.0}, **D)
    assert np.all(t2["flux_ref_err"] < t1["flux_ref_err"])
    assert_allclose(t2["flux_test_err"], t1["flux_test_err"])
    # a StdDevUncertainty is the full error
    unc = field(x, y, f, seed=1, uncertainty=StdDevUncertainty(np.full(SHAPE, 2.0)))
    t3, _ = photometric_comparison(unc, unc, **D)
    assert_allclose(t3["flux_ref_err"].value, 2.0 * np.sqrt(area), rtol=1e-6)
    # other uncertainty classes are converted (inverse variance 0.25 -> sigma 2)
    ivar = field(x, y, f, seed=1, uncertainty=InverseVariance(np.full(SHAPE, 0.25)))
    t4, _ = photometric_comparison(ivar, ivar, **D)
    assert_allclose(t4["flux_ref_err"].value, 2.0 * np.sqrt(area), rtol=1e-6)
    assert t4.meta["error_model"]["test"].startswith("uncertainty")


def test_default_errors_ignore_declared_uncertainty(stars):
    """SNR comes from the measured background: a claimed tiny uncertainty changes nothing."""
    x, y, f = stars
    plain = field(x, y, f, seed=1, meta={"EXPTIME": 10.0})
    claimed = field(x, y, f, seed=1, meta={"EXPTIME": 1e6},
                    uncertainty=StdDevUncertainty(np.full(SHAPE, 1e-3)))
    t_plain, s_plain = photometric_comparison(plain, plain, input=plain)
    t_claim, s_claim = photometric_comparison(plain, claimed, input=plain)
    assert_allclose(t_claim["flux_test_err"], t_plain["flux_test_err"])
    assert_allclose(s_claim["snr_gain"], 1.0)
    assert "measured background" in t_claim.meta["error_model"]["test"]
    with pytest.raises(ValueError, match="errors must be one of"):
        photometric_comparison(plain, plain, errors="made-up")


def test_units_are_converted(stars, reference):
    x, y, f = stars
    hourly = field(x, y, f, seed=0)
    hourly = CCDData(hourly.data * 3600.0, unit=u.electron / u.hour)
    table, s = photometric_comparison(reference, hourly)
    assert s["tpr"] == 1.0
    assert_allclose(table["flux_test"].to_value(u.electron / u.s),
                    table["flux_ref"].to_value(u.electron / u.s), rtol=1e-9)
    assert table["flux_test"].unit == u.electron / u.s


def test_plain_arrays_and_nddata(reference):
    table, s = photometric_comparison(reference.data, np.array(reference.data))
    assert s["n_matched"] == 30
    assert table["flux_ref"].unit == u.dimensionless_unscaled
    nd = NDData(reference.data, unit="electron/s")
    _, s2 = photometric_comparison(nd, reference)
    assert s2["tpr"] == 1.0
    with pytest.raises(u.UnitsError, match="cannot be converted"):
        photometric_comparison(reference.data, reference)


def test_bad_pixels_are_ignored(stars, reference):
    spoiled = reference.copy()
    spoiled.data[0:40, 0:40] = np.nan
    mask = np.zeros(SHAPE, bool)
    mask[100:140, 100:140] = True
    spoiled.data[100:140, 100:140] = 1e6  # would be a huge "source" if not masked
    spoiled.mask = mask
    table, s = photometric_comparison(reference, spoiled)
    assert s["precision"] == 1.0
    lost = ((table["x_ref"] < 45) & (table["y_ref"] < 45)) | (
        (table["x_ref"] > 95) & (table["y_ref"] > 95))
    assert np.all(table["matched"][~lost])
    # image metrics skip the bad pixels: identical elsewhere
    assert s["psnr"] == np.inf and s["kl"] == 0.0
    assert s["ssim"] == pytest.approx(1.0)


def test_inputs_not_modified(stars, reference):
    x, y, f = stars
    test = field(x, y, f, seed=3, meta={"EXPTIME": 100.0},
                 uncertainty=StdDevUncertainty(np.ones(SHAPE)), mask=np.zeros(SHAPE, bool))
    test.data[5, 5] = np.nan
    before_ref, before_test = deepcopy(reference), deepcopy(test)
    photometric_comparison(reference, test, input=test)
    for a, b in ((reference, before_ref), (test, before_test)):
        assert_array_equal(a.data, b.data)
        assert dict(a.meta) == dict(b.meta)
        assert (a.mask is None) == (b.mask is None)
        if a.mask is not None:
            assert_array_equal(a.mask, b.mask)
        if a.uncertainty is not None:
            assert_array_equal(a.uncertainty.array, b.uncertainty.array)


def test_matching_is_one_to_one_closest_first():
    # two reference points compete for one test point: the closer one wins
    i, j, d = _match_pixels(np.array([0.0, 1.5]), np.zeros(2), np.array([0.9]), np.zeros(1), 2.0)
    assert i.tolist() == [1] and j.tolist() == [0]
    assert_allclose(d, [0.6])
    # a globally closest pair is not stolen by a greedy scan in index order
    i, j, d = _match_pixels(np.array([0.0, 1.0]), np.zeros(2), np.array([1.1, -1.5]),
                            np.zeros(2), 2.0)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (1, 0)]
    # nothing within the radius, or an empty side
    assert len(_match_pixels(np.array([0.0]), np.zeros(1), np.array([5.0]), np.zeros(1), 2)[0]) == 0
    assert len(_match_pixels(np.zeros(0), np.zeros(0), np.array([5.0]), np.zeros(1), 2)[0]) == 0


# --------------------------------------------------------------------------- WCS matching
def test_sky_matching_equals_pixel_matching(stars, reference):
    x, y, f = stars
    ref = field(x, y, f, seed=0, wcs=tan_wcs())
    tst = field(x + 0.7, y, f, seed=8, wcs=tan_wcs())
    t_pix, s_pix = photometric_comparison(ref, tst, match="pixel")
    t_sky, s_sky = photometric_comparison(ref, tst)
    assert s_sky["match"] == "sky" and s_pix["match"] == "pixel"
    assert s_sky["n_matched"] == s_pix["n_matched"] == 30
    assert_array_equal(t_sky["id_ref"], t_pix["id_ref"])
    assert_array_equal(t_sky["id_test"], t_pix["id_test"])
    assert_allclose(t_sky["separation"], t_pix["separation"], rtol=1e-3)


def test_sky_matching_across_pixel_grids(stars):
    x, y, f = stars
    # the same sky seen on a grid offset by 6 px: pixel matching fails, sky matching works
    ref = field(x, y, f, seed=0, wcs=tan_wcs())
    tst = field(x - 6.0, y, f, seed=4, wcs=tan_wcs(crpix=(74.0, 80.0)))
    keep_x = x - 6.0 > 8  # all stars stay inside the test image
    assert keep_x.all()
    _, s_pix = photometric_comparison(ref, tst, match="pixel")
    _, s_sky = photometric_comparison(ref, tst, match="sky")
    assert s_pix["n_matched"] == 0
    assert s_sky["n_matched"] == 30 and s_sky["tpr"] == 1.0
    with pytest.raises(ValueError, match="celestial WCS"):
        photometric_comparison(ref, field(x, y, f), match="sky")


# --------------------------------------------------------------------------- errors
def test_bad_input_raises(reference):
    with pytest.raises(ValueError, match="same shape"):
        photometric_comparison(reference, reference[:100, :])
    with pytest.raises(ValueError, match="input must have the reference shape"):
        photometric_comparison(reference, reference, input=reference[:, :50])
    with pytest.raises(u.UnitsError, match="cannot be converted"):
        photometric_comparison(reference, CCDData(reference.data, unit="adu"))
    with pytest.raises(u.UnitsError, match="no unit"):
        photometric_comparison(reference, NDData(reference.data))
    with pytest.raises(ValueError, match="2-D"):
        photometric_comparison(CCDData(np.ones((2, 8, 8)), unit="electron"), reference)
    with pytest.raises(TypeError, match="NDData"):
        photometric_comparison(reference, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="threshold must be one of"):
        photometric_comparison(reference, reference, threshold="global")
    with pytest.raises(ValueError, match="match must be one of"):
        photometric_comparison(reference, reference, match="nearest")
    with pytest.raises(ValueError, match="min_area must be an integer"):
        photometric_comparison(reference, reference, min_area=2.5)
    with pytest.raises(ValueError, match="aperture_radius"):
        photometric_comparison(reference, reference, aperture_radius=-1)
    with pytest.raises(ValueError, match="exposure_time"):
        photometric_comparison(reference, reference, exposure_time=-5)
    with pytest.raises(ValueError, match="Unknown keys"):
        photometric_comparison(reference, reference, exposure_time={"ref": 5})


# --------------------------------------------------------------------------- SEP cross-check
def test_agrees_with_sep_on_synthetic_field(stars, reference):
    """photutils engine vs SEP (SExtractor library) with the paper's settings.

    Tolerance: same detections, centroids within 0.1 px, aperture fluxes
    within 2 % each and 0.5 % in the median (the residual is the
    background estimate: Background2D vs SEP's mesh mode).
    """
    sep = pytest.importorskip("sep")
    data = np.ascontiguousarray(reference.data, dtype=np.float64)
    ours = _detect_and_measure(data)
    bkg = sep.Background(data, bw=64, bh=64, fw=3, fh=3)
    sub = data - bkg.back()
    rms = bkg.rms()
    objects = sep.extract(sub, 7.0, err=rms, minarea=10, filter_kernel=None,
                          deblend_nthresh=32, deblend_cont=0.005)
    flux, _, _ = sep.sum_circle(sub, objects["x"], objects["y"], 5.0, err=rms, subpix=0)
    assert len(objects) == len(ours["x"]) == 30
    dist, idx = KDTree(np.column_stack([objects["x"], objects["y"]])).query(
        np.column_stack([ours["x"], ours["y"]]))
    assert len(set(idx)) == 30 and dist.max() < 0.1
    ratio = ours["flux"] / flux[idx]
    assert abs(np.median(ratio) - 1) < 0.005
    assert np.all(np.abs(ratio - 1) < 0.02)
