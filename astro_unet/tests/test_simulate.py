# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_unet.simulate (paper eq. 4 noise model)."""

import dataclasses
import math
from copy import deepcopy

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.wcs import WCS

from astro_unet.simulate import DETECTOR_PRESETS, DetectorPreset, simulate_short_exposure

RON_UVIS = 3.1
DARK_UVIS = 7.0 / 3600.0
SHAPE = (200, 200)
NPIX = SHAPE[0] * SHAPE[1]


def _flat(value, unit, **header):
    return CCDData(np.full(SHAPE, value, dtype=float), unit=unit, meta=fits.Header(header))


def _check_moments(out, *, mean, lam_e, gauss_var_e, out_scale, nsig=5.0):
    """Sample mean/variance of ``out.data`` against the model, within ``nsig`` sigma."""
    var = (lam_e + gauss_var_e) / out_scale ** 2
    kappa4 = lam_e / out_scale ** 4  # fourth cumulant of the Poisson part
    data = np.asarray(out.data, dtype=float)
    n = data.size
    assert abs(data.mean() - mean) < nsig * math.sqrt(var / n)
    assert abs(data.var(ddof=1) - var) < nsig * math.sqrt((kappa4 + 2 * var ** 2) / n)
    # the model uncertainty is exactly the predicted standard deviation
    np.testing.assert_allclose(out.uncertainty.array, math.sqrt(var), rtol=1e-12)


@pytest.fixture
def wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [10.0, 12.0]
    w.wcs.cdelt = [-0.04 / 3600, 0.04 / 3600]
    w.wcs.set()
    return w


def _star_image(shape=(31, 31), flux=6.0, sigma=2.0, offset=-0.002):
    """Gaussian star (electron/s) on a slightly negative, sky-subtracted background."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    rr2 = (xx - cx) ** 2 + (yy - cy) ** 2
    star = flux / (2 * np.pi * sigma ** 2) * np.exp(-rr2 / (2 * sigma ** 2))
    return star + offset, rr2


# --------------------------------------------------------------------------
# noise statistics, one test per unit
# --------------------------------------------------------------------------

def test_statistics_electron_per_second():
    t, r, value = 1000.0, 4.0, 0.2
    ccd = _flat(value, "electron/s", EXPTIME=t)
    out = simulate_short_exposure(ccd, r, detector="wfc3_uvis", seed=1)
    assert out.unit == u.electron / u.s
    _check_moments(out, mean=value, lam_e=value * t / r,
                   gauss_var_e=RON_UVIS ** 2 + DARK_UVIS * t / r, out_scale=t / r)


def test_statistics_electron_counts():
    t, r, value = 600.0, 3.0, 300.0
    ccd = _flat(value, "electron", EXPTIME=t)
    out = simulate_short_exposure(ccd, r, detector="wfc3_uvis", seed=2)
    assert out.unit == u.electron
    _check_moments(out, mean=value / r, lam_e=value / r,
                   gauss_var_e=RON_UVIS ** 2 + DARK_UVIS * t / r, out_scale=1.0)


def test_statistics_adu_with_header_gain():
    t, r, value, g = 800.0, 2.0, 150.0, 2.0
    ccd = _flat(value, "adu", EXPTIME=t, GAIN=g)
    out = simulate_short_exposure(ccd, r, detector="wfc3_uvis", seed=3)
    assert out.unit == u.adu
    _check_moments(out, mean=value / r, lam_e=value * g / r,
                   gauss_var_e=RON_UVIS ** 2 + DARK_UVIS * t / r, out_scale=g)
    assert out.header["SIMGAIN"] == g


def test_statistics_adu_per_second_with_gain_argument():
    t, r, value, g = 500.0, 5.0, 0.4, 1.5
    ccd = _flat(value, "adu/s", EXPTIME=t)
    out = simulate_short_exposure(ccd, r, detector="wfc3_uvis", gain=g * u.electron / u.adu,
                                  seed=4)
    assert out.unit == u.adu / u.s
    _check_moments(out, mean=value, lam_e=value * g * t / r,
                   gauss_var_e=RON_UVIS ** 2 + DARK_UVIS * t / r, out_scale=g * t / r)


def test_statistics_custom_read_noise_and_dark_in_per_hour():
    # read-noise/dark dominated regime; dark given per hour as a Quantity
    t, r, value = 3600.0, 2.0, 0.001
    ccd = _flat(value, "electron/s", EXPTIME=t)
    out = simulate_short_exposure(ccd, r, detector="generic", read_noise=8 * u.electron,
                                  dark_current=36 * u.electron / u.hour, seed=5)
    _check_moments(out, mean=value, lam_e=value * t / r,
                   gauss_var_e=64.0 + 0.01 * t / r, out_scale=t / r)
    assert out.header["SIMRDNS"] == 8.0
    assert out.header["SIMDARK"] == pytest.approx(0.01)


def test_statistics_sky_added_back():
    # sky-subtracted flat image: the mean stays 0, the variance has the sky photons
    t, r, value, sky = 400.0, 2.0, 0.0, 0.5
    ccd = _flat(value, "electron/s", EXPTIME=t)
    out = simulate_short_exposure(ccd, r, detector="wfc3_uvis", sky=sky, seed=6)
    _check_moments(out, mean=0.0, lam_e=sky * t / r,
                   gauss_var_e=RON_UVIS ** 2 + DARK_UVIS * t / r, out_scale=t / r)
    assert out.header["SIMSKY"] == sky
    # without the sky the background has only dark + read noise (paper behaviour)
    bare = simulate_short_exposure(ccd, r, detector="wfc3_uvis", seed=6)
    assert bare.data.std() < 0.5 * out.data.std()


def test_sky_from_header_mdrizsky_and_quantity():
    ccd = _flat(0.0, "electron", EXPTIME=100.0, MDRIZSKY=40.0)
    a = simulate_short_exposure(ccd, 2, read_noise=0, dark_current=0, sky="header", seed=7)
    b = simulate_short_exposure(ccd, 2, read_noise=0, dark_current=0,
                                sky=40 * u.electron, seed=7)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.header["SIMSKY"] == 40.0
    # pure Poisson(20) - 20: variance 20
    _check_moments(a, mean=0.0, lam_e=20.0, gauss_var_e=0.0, out_scale=1.0)


def test_negative_pixels_keep_their_mean():
    # lambda < 0 everywhere: no Poisson noise, mean exactly the input
    ccd = _flat(-0.05, "electron/s", EXPTIME=100.0)
    out = simulate_short_exposure(ccd, 2, read_noise=0, dark_current=0, seed=8)
    np.testing.assert_allclose(out.data, -0.05, rtol=1e-12)
    noisy = simulate_short_exposure(ccd, 2, read_noise=3.0, dark_current=0, seed=8)
    _check_moments(noisy, mean=-0.05, lam_e=0.0, gauss_var_e=9.0, out_scale=50.0)


# --------------------------------------------------------------------------
# many draws on a star: unbiased per pixel and in apertures
# --------------------------------------------------------------------------

def test_star_mean_over_draws_and_aperture_flux():
    t, r, ndraw = 1000.0, 3.0, 300
    star, rr2 = _star_image()
    ccd = CCDData(star, unit="electron/s", meta=fits.Header({"EXPTIME": t}))
    rng = np.random.default_rng(11)
    draws = np.array([simulate_short_exposure(ccd, r, detector="wfc3_uvis", seed=rng).data
                      for _ in range(ndraw)])
    sigma = simulate_short_exposure(ccd, r, detector="wfc3_uvis", seed=0).uncertainty.array

    # per-pixel mean equals the input (rate unit keeps the flux scale)
    z = (draws.mean(axis=0) - star) / (sigma / math.sqrt(ndraw))
    assert np.abs(z).max() < 5.5
    # the scatter over draws follows the model uncertainty
    np.testing.assert_allclose(draws.std(axis=0, ddof=1).mean(), sigma.mean(), rtol=0.03)

    # aperture (radius 6 px) flux conserved on average
    aperture = rr2 <= 36
    sums = draws[:, aperture].sum(axis=1)
    expected = star[aperture].sum()
    err = math.sqrt((sigma[aperture] ** 2).sum() / ndraw)
    assert abs(sums.mean() - expected) < 5 * err
    assert expected > 5.0  # the aperture really holds the star


def test_star_counts_unit_scales_by_ratio():
    t, r, ndraw = 1000.0, 4.0, 200
    star, rr2 = _star_image()
    counts = star * t  # electrons in the long exposure
    ccd = CCDData(counts, unit="electron", meta=fits.Header({"EXPTIME": t}))
    rng = np.random.default_rng(12)
    sums = [simulate_short_exposure(ccd, r, detector="wfc3_uvis", seed=rng).data[rr2 <= 36].sum()
            for _ in range(ndraw)]
    expected = counts[rr2 <= 36].sum() / r
    var = (np.maximum(counts[rr2 <= 36] / r, 0) + RON_UVIS ** 2 + DARK_UVIS * t / r).sum()
    assert abs(np.mean(sums) - expected) < 5 * math.sqrt(var / ndraw)


# --------------------------------------------------------------------------
# reproducibility
# --------------------------------------------------------------------------

def test_seed_reproducible_and_different_seeds_differ():
    ccd = _flat(1.0, "electron/s", EXPTIME=100.0)
    a = simulate_short_exposure(ccd, 2, detector="wfc3_uvis", seed=123)
    b = simulate_short_exposure(ccd, 2, detector="wfc3_uvis", seed=123)
    c = simulate_short_exposure(ccd, 2, detector="wfc3_uvis", seed=124)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    assert a.header["SIMSEED"] == 123
    g1 = simulate_short_exposure(ccd, 2, detector="wfc3_uvis", seed=np.random.default_rng(5))
    g2 = simulate_short_exposure(ccd, 2, detector="wfc3_uvis", seed=np.random.default_rng(5))
    np.testing.assert_array_equal(g1.data, g2.data)
    assert g1.header["SIMSEED"] == "generator"
    assert simulate_short_exposure(ccd, 2, detector="wfc3_uvis").header["SIMSEED"] == "none"


# --------------------------------------------------------------------------
# metadata, mask, uncertainty, classes, dtypes
# --------------------------------------------------------------------------

def _assert_same(before, after):
    np.testing.assert_array_equal(before.data, after.data)
    if before.mask is None:
        assert after.mask is None
    else:
        np.testing.assert_array_equal(before.mask, after.mask)
    if before.uncertainty is None:
        assert after.uncertainty is None
    else:
        np.testing.assert_array_equal(before.uncertainty.array, after.uncertainty.array)
    assert dict(before.meta) == dict(after.meta)


def test_metadata_wcs_mask_uncertainty(wcs):
    t, r = 1200.0, 2.5
    data = np.full((40, 50), 0.3)
    data[5, 7] = np.nan
    data[6, 8] = np.inf
    mask = np.zeros(data.shape, bool)
    mask[20, 30] = True
    data[20, 30] = 7.0
    header = fits.Header({"EXPTIME": t, "INSTRUME": "WFC3", "DETECTOR": "UVIS",
                          "OBJECT": "test field"})
    ccd = CCDData(data, unit="electron/s", wcs=wcs, mask=mask, meta=header,
                  uncertainty=StdDevUncertainty(np.full(data.shape, 0.01)))
    before = deepcopy(ccd)

    out = simulate_short_exposure(ccd, r, seed=9)
    _assert_same(before, ccd)  # input untouched
    assert isinstance(out, CCDData) and out is not ccd
    assert out.wcs.wcs.compare(wcs.wcs) and out.wcs.wcs.compare(ccd.wcs.wcs)
    assert out.wcs.to_header() == ccd.wcs.to_header()
    assert out.wcs is not ccd.wcs

    hdr = out.header
    assert hdr["EXPTIME"] == pytest.approx(t / r)
    assert hdr["SIMEXPT0"] == t
    assert hdr["SIMRATIO"] == r
    assert hdr["SIMSEED"] == 9
    assert hdr["SIMRDNS"] == RON_UVIS
    assert hdr["SIMDARK"] == pytest.approx(DARK_UVIS)
    assert hdr["SIMSKY"] == 0.0
    assert hdr["SIMDET"] == "wfc3_uvis"
    assert hdr["OBJECT"] == "test field"
    assert any("simulate_short_exposure" in str(h) for h in hdr["HISTORY"])

    expected_mask = mask | ~np.isfinite(data)
    np.testing.assert_array_equal(out.mask, expected_mask)
    assert np.isnan(out.data[5, 7]) and np.isinf(out.data[6, 8])
    assert out.data[20, 30] == 7.0  # masked pixel: not randomised, same flux scale
    good = ~expected_mask
    assert np.isfinite(out.data[good]).all()

    lam = data * t / r
    model = np.sqrt(np.maximum(lam, 0) + DARK_UVIS * t / r + RON_UVIS ** 2) / (t / r)
    np.testing.assert_allclose(out.uncertainty.array[good], model[good], rtol=1e-12)
    np.testing.assert_allclose(out.uncertainty.array[20, 30], model[20, 30], rtol=1e-12)
    assert np.isnan(out.uncertainty.array[5, 7])
    assert isinstance(out.uncertainty, StdDevUncertainty)


def test_counts_masked_pixel_scaled_by_ratio_and_no_mask_when_clean():
    ccd = CCDData(np.full((10, 10), 100.0), unit="electron",
                  mask=np.eye(10, dtype=bool), meta=fits.Header({"EXPTIME": 10.0}))
    out = simulate_short_exposure(ccd, 4, read_noise=2, seed=1)
    np.testing.assert_array_equal(out.data[np.eye(10, dtype=bool)], 25.0)
    clean = CCDData(np.full((10, 10), 100.0), unit="electron", meta={"EXPTIME": 10.0})
    assert simulate_short_exposure(clean, 4, read_noise=2, seed=1).mask is None


def test_nddata_in_nddata_out_and_dict_meta(wcs):
    nd = NDData(np.full((20, 20), 5.0), unit="electron/s", wcs=wcs, meta={"EXPTIME": 50.0})
    before = deepcopy(nd)
    out = simulate_short_exposure(nd, 2, read_noise=3.0, seed=3)
    assert type(out) is NDData
    assert out.unit == u.electron / u.s
    assert out.meta["EXPTIME"] == 25.0  # plain value in dict metadata
    assert out.meta["SIMDET"] == "custom"
    assert out.wcs.wcs.compare(wcs.wcs)
    np.testing.assert_array_equal(nd.data, before.data)
    assert nd.meta == before.meta


def test_dtype_follows_input():
    f32 = CCDData(np.full((8, 8), 2.0, dtype=np.float32), unit="electron",
                  meta={"EXPTIME": 10.0})
    out = simulate_short_exposure(f32, 2, read_noise=1, seed=0)
    assert out.data.dtype == np.float32 and out.uncertainty.array.dtype == np.float32
    i16 = CCDData(np.full((8, 8), 2, dtype=np.int16), unit="electron", meta={"EXPTIME": 10.0})
    assert simulate_short_exposure(i16, 2, read_noise=1, seed=0).data.dtype == np.float64


def test_other_exposure_keywords_scaled_and_counts_without_time():
    ccd = _flat(10.0, "electron", EXPTIME=300.0, TEXPTIME=300.0)
    out = simulate_short_exposure(ccd[:10, :10], 3, read_noise=1, seed=0)
    assert out.header["TEXPTIME"] == pytest.approx(100.0)
    # counts without any exposure time work when there is no dark current
    bare = CCDData(np.full((5, 5), 10.0), unit="electron")
    out = simulate_short_exposure(bare, 2, read_noise=1, seed=0)
    assert out.meta["SIMEXPT0"] == "unknown"
    assert "EXPTIME" not in out.meta


# --------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------

def test_presets_table():
    assert set(DETECTOR_PRESETS) >= {"wfc3_uvis", "acs_wfc", "generic"}
    uvis = DETECTOR_PRESETS["wfc3_uvis"]
    assert (uvis.read_noise, uvis.gain) == (3.1, 1.5)
    assert uvis.dark_current == pytest.approx(7 / 3600)
    assert DETECTOR_PRESETS["acs_wfc"].gain == 2.0
    assert all(p.reference for p in DETECTOR_PRESETS.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        uvis.read_noise = 1.0


@pytest.mark.parametrize("instrume, detector, name", [
    ("WFC3", "UVIS", "wfc3_uvis"),
    ("ACS     ", "wfc", "acs_wfc"),
])
def test_header_autodetection(instrume, detector, name):
    ccd = CCDData(np.full((10, 10), 1.0), unit="electron/s",
                  meta=fits.Header({"EXPTIME": 100.0, "INSTRUME": instrume,
                                    "DETECTOR": detector}))
    out = simulate_short_exposure(ccd, 2, seed=0)
    preset = DETECTOR_PRESETS[name]
    assert out.header["SIMDET"] == name
    assert out.header["SIMRDNS"] == preset.read_noise
    assert out.header["SIMDARK"] == pytest.approx(preset.dark_current)


def test_explicit_values_override_presets():
    ccd = CCDData(np.full((10, 10), 1.0), unit="electron/s",
                  meta=fits.Header({"EXPTIME": 100.0, "INSTRUME": "ACS", "DETECTOR": "WFC"}))
    out = simulate_short_exposure(ccd, 2, read_noise=1.5, seed=0)
    assert out.header["SIMRDNS"] == 1.5
    assert out.header["SIMDARK"] == pytest.approx(DETECTOR_PRESETS["acs_wfc"].dark_current)
    assert out.header["SIMDET"] == "acs_wfc+override"
    # explicit detector beats the header
    out = simulate_short_exposure(ccd, 2, detector="WFC3_UVIS", seed=0)
    assert out.header["SIMDET"] == "wfc3_uvis"
    # a user preset
    mine = DetectorPreset("lab", read_noise=6.0, dark_current=0.0, gain=3.0)
    adu = CCDData(np.full((10, 10), 100.0), unit="adu", meta={"EXPTIME": 10.0})
    out = simulate_short_exposure(adu, 2, detector=mine, seed=0)
    assert out.meta["SIMGAIN"] == 3.0 and out.meta["SIMRDNS"] == 6.0
    # header GAIN beats the preset gain, the argument beats both
    adu.meta["GAIN"] = 4.0
    assert simulate_short_exposure(adu, 2, detector=mine, seed=0).meta["SIMGAIN"] == 4.0
    assert simulate_short_exposure(adu, 2, detector=mine, gain=5,
                                   seed=0).meta["SIMGAIN"] == 5.0


def test_adu_output_carries_its_gain():
    # issue 11: `astro-unet simulate --unit adu --gain 2.7` wrote SIMGAIN but
    # not GAIN, so denoising the output needed --gain again
    adu = CCDData(np.full((10, 10), 100.0), unit="adu", meta=fits.Header({"EXPTIME": 10.0}))
    out = simulate_short_exposure(adu, 2, read_noise=3.0, gain=2.7, seed=0)
    assert out.header["GAIN"] == 2.7 and out.header["SIMGAIN"] == 2.7
    assert "GAIN" not in adu.meta
    # a header gain of another value is replaced by the one used; the same value is kept
    adu.meta["CCDGAIN"] = 2.0
    out = simulate_short_exposure(adu, 2, read_noise=3.0, gain=2.7, seed=0)
    assert out.header["GAIN"] == 2.7 and out.header["CCDGAIN"] == 2.0
    out = simulate_short_exposure(adu, 2, read_noise=3.0, seed=0)
    assert "GAIN" not in out.header and out.header["SIMGAIN"] == 2.0
    # electrons need no gain
    assert "GAIN" not in simulate_short_exposure(_flat(5.0, "electron"), 2, read_noise=3.0,
                                                 seed=0).header


@pytest.mark.parametrize("gain", [-2 * u.electron / u.adu, 0 * u.electron / u.adu, -2.0])
def test_gain_not_positive(gain):
    adu = CCDData(np.full((10, 10), 100.0), unit="adu")
    with pytest.raises(ValueError, match="gain must be a finite positive number"):
        simulate_short_exposure(adu, 2, read_noise=3.0, gain=gain, seed=0)
    mine = DetectorPreset("lab", read_noise=6.0, dark_current=0.0, gain=-3.0)
    with pytest.raises(ValueError, match="preset lab gain must be a finite positive"):
        simulate_short_exposure(adu, 2, detector=mine, seed=0)


@pytest.mark.parametrize("seed, exc, match", [
    ("abc", TypeError, "seed must be None, a non-negative integer or a numpy.random"),
    (1.5, TypeError, "seed must be None"),
    (True, TypeError, "seed must be None"),
    (-1, ValueError, "seed must be a non-negative integer, got -1"),
])
def test_bad_seed(seed, exc, match):
    # issue 11: raw numpy errors ("SeedSequence expects int or sequence of ints")
    with pytest.raises(exc, match=match):
        simulate_short_exposure(_flat(5.0, "electron"), 2, read_noise=3.0, seed=seed)


def test_seed_types_accepted():
    ccd = _flat(5.0, "electron")
    a = simulate_short_exposure(ccd, 2, read_noise=3.0, seed=np.int64(7))
    b = simulate_short_exposure(ccd, 2, read_noise=3.0, seed=np.random.SeedSequence(7))
    c = simulate_short_exposure(ccd, 2, read_noise=3.0, seed=np.random.PCG64(7))
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.data, c.data)


def test_read_noise_from_rdnoise_header():
    ccd = CCDData(np.full((10, 10), 10.0), unit="electron", meta={"RDNOISE": 7.5})
    out = simulate_short_exposure(ccd, 2, seed=0)
    assert out.meta["SIMRDNS"] == 7.5
    assert out.meta["SIMDARK"] == 0.0


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

def _ok(**meta):
    meta.setdefault("EXPTIME", 100.0)
    return CCDData(np.full((10, 10), 1.0), unit="electron/s", meta=fits.Header(meta))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(ratio=1), ValueError, "ratio must be a finite number > 1"),
    (dict(ratio=0.5), ValueError, "ratio must be a finite number > 1"),
    (dict(ratio=np.nan), ValueError, "ratio must be a finite number > 1"),
    (dict(ratio=np.inf), ValueError, "ratio must be a finite number > 1"),
    (dict(ratio="two"), TypeError, "ratio must be a number"),
    (dict(ratio=2, detector="hubble"), ValueError, "Unknown detector 'hubble'"),
    (dict(ratio=2, detector=3.1), TypeError, "detector must be a preset name"),
    (dict(ratio=2, detector="generic"), ValueError, "No read noise known"),
    (dict(ratio=2), ValueError, "No read noise known.*read_noise="),
    (dict(ratio=2, read_noise=-1), ValueError, "read_noise must be a finite number >= 0"),
    (dict(ratio=2, read_noise=3 * u.adu), u.UnitsError, "read_noise must be in electron"),
    (dict(ratio=2, read_noise=3, dark_current=1 * u.electron), u.UnitsError,
     "dark_current must be in electron / s"),
    (dict(ratio=2, read_noise=3, sky=-1.0), ValueError, "sky must be a finite number >= 0"),
    (dict(ratio=2, read_noise=3, sky="auto"), ValueError, "'header'"),
    (dict(ratio=2, read_noise=3, sky="header"), ValueError, "MDRIZSKY"),
    (dict(ratio=2, read_noise=3, sky=1 * u.adu), u.UnitsError, "sky must be in electron / s"),
])
def test_bad_arguments(kwargs, exc, match):
    ccd = _ok()
    before = deepcopy(ccd)
    ratio = kwargs.pop("ratio")
    with pytest.raises(exc, match=match):
        simulate_short_exposure(ccd, ratio, **kwargs)
    _assert_same(before, ccd)


def test_bad_images():
    with pytest.raises(TypeError, match="CCDData or NDData"):
        simulate_short_exposure(np.ones((5, 5)), 2, read_noise=1)
    with pytest.raises(ValueError, match="2-D"):
        simulate_short_exposure(CCDData(np.ones((2, 5, 5)), unit="electron"), 2, read_noise=1)
    with pytest.raises(u.UnitsError, match="no unit"):
        simulate_short_exposure(NDData(np.ones((5, 5))), 2, read_noise=1)
    with pytest.raises(u.UnitsError, match="Cannot convert unit 'Jy'"):
        simulate_short_exposure(CCDData(np.ones((5, 5)), unit="Jy"), 2, read_noise=1)
    with pytest.raises(ValueError, match="gain"):
        simulate_short_exposure(CCDData(np.ones((5, 5)), unit="adu"), 2, read_noise=1)
    with pytest.raises(ValueError, match="exposure time"):
        simulate_short_exposure(CCDData(np.ones((5, 5)), unit="electron/s"), 2, read_noise=1)
    with pytest.raises(ValueError, match="dark current.*exposure time"):
        simulate_short_exposure(CCDData(np.ones((5, 5)), unit="electron"), 2,
                                detector="wfc3_uvis")
    all_nan = CCDData(np.full((5, 5), np.nan), unit="electron", meta={"EXPTIME": 1.0})
    with pytest.raises(ValueError, match="no finite, unmasked pixel"):
        simulate_short_exposure(all_nan, 2, read_noise=1)
    assert np.isnan(all_nan.data).all()
