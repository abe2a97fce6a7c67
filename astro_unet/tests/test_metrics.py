# Licensed under a 3-clause BSD style license - see LICENSE.rst
import numpy as np
import pytest
import astropy.units as u
from astropy.nddata import CCDData
from numpy.testing import assert_allclose
from skimage.metrics import structural_similarity

from astro_unet.metrics import (
    completeness_curve, depth, kl_divergence, psnr, snr_gain, ssim,
)


@pytest.fixture
def noisy_pair():
    rng = np.random.default_rng(42)
    ref = rng.normal(10.0, 1.0, (48, 40))
    test = ref + rng.normal(0.0, 0.5, ref.shape)
    return ref, test


# --------------------------------------------------------------------------- psnr
def test_psnr_identical_is_inf(noisy_pair):
    ref, _ = noisy_pair
    assert psnr(ref, ref) == np.inf
    assert psnr(ref, ref.copy(), data_range=3.0) == np.inf


def test_psnr_known_values():
    ref = np.zeros((10, 10))
    ref[0, 0] = 1.0
    # MSE = 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert_allclose(psnr(ref, ref + 0.1, data_range=1.0), 20.0)
    # MSE = 1, R = 10 -> 20 dB ; R = 100 -> 40 dB
    assert_allclose(psnr(ref, ref + 1.0, data_range=10.0), 20.0)
    assert_allclose(psnr(ref, ref - 1.0, data_range=100.0), 40.0)


def test_psnr_default_peak_is_clipped_maximum():
    # uniform values 0..99 plus one outlier: the 3-sigma clip drops the outlier,
    # so the peak is 99, as in the paper's code
    ref = np.arange(100.0).reshape(10, 10)
    ref[5, 5] = 1e6
    test = ref + 2.0  # MSE = 4
    expected = 10 * np.log10(99.0**2 / 4.0)
    assert_allclose(psnr(ref, test), expected)
    assert_allclose(psnr(ref, test, data_range=99.0), expected)


def test_psnr_ignores_nan_and_masked_pixels(noisy_pair):
    ref, test = noisy_pair
    base = psnr(ref, test, data_range=5.0)
    bad_test = test.copy()
    bad_test[3, 4] = np.nan
    bad_test[10, 10] = 1e9
    mask = np.zeros(ref.shape, bool)
    mask[10, 10] = True
    with_bad = psnr(ref, bad_test, data_range=5.0, mask=mask)
    # only two pixels removed out of 1920: nearly the same value, finite
    assert np.isfinite(with_bad)
    assert abs(with_bad - base) < 0.05
    # the NDData mask works like the mask argument
    nd = CCDData(bad_test, unit="electron/s", mask=mask)
    assert_allclose(psnr(CCDData(ref, unit="electron/s"), nd, data_range=5.0), with_bad)


def test_psnr_converts_units(noisy_pair):
    ref, test = noisy_pair
    a = CCDData(ref, unit="electron/s")
    b = CCDData(test * 3600.0, unit=u.electron / u.hour)
    assert_allclose(psnr(a, b, data_range=5 * u.electron / u.s),
                    psnr(ref, test, data_range=5.0))
    # a Quantity works too
    assert_allclose(psnr(ref * u.electron / u.s, test * 3600 * u.electron / u.h,
                         data_range=5.0), psnr(ref, test, data_range=5.0))


def test_metrics_bad_input(noisy_pair):
    ref, test = noisy_pair
    with pytest.raises(ValueError, match="same shape"):
        psnr(ref, test[:-1])
    with pytest.raises(ValueError, match="same shape"):
        ssim(ref, test[:, :-1])
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(ref, test.T)
    with pytest.raises(u.UnitsError, match="cannot be converted"):
        psnr(CCDData(ref, unit="electron/s"), CCDData(test, unit="adu"))
    with pytest.raises(ValueError, match="No pixel is finite"):
        psnr(ref, np.full(ref.shape, np.nan))
    with pytest.raises(ValueError, match="data_range"):
        psnr(ref, test, data_range=-1)
    with pytest.raises(ValueError, match="mask shape"):
        psnr(ref, test, mask=np.zeros((3, 3), bool))
    with pytest.raises(TypeError, match="numpy array"):
        psnr(ref, "abc")


# --------------------------------------------------------------------------- ssim
def test_ssim_identical_is_one(noisy_pair):
    ref, _ = noisy_pair
    assert_allclose(ssim(ref, ref), 1.0, rtol=0, atol=1e-12)


def test_ssim_matches_skimage_and_decreases_with_noise(noisy_pair):
    ref, test = noisy_pair
    rng = np.random.default_rng(7)
    expected = structural_similarity(ref, test, data_range=np.ptp(ref))
    assert_allclose(ssim(ref, test), expected)
    noisier = ref + rng.normal(0.0, 2.0, ref.shape)
    assert ssim(ref, noisier) < ssim(ref, test) < 1.0


def test_ssim_ignores_invalid_pixels(noisy_pair):
    ref, test = noisy_pair
    base = ssim(ref, test, data_range=8.0)
    spoiled = test.copy()
    spoiled[20:23, 20:23] = np.nan  # ignored, not propagated
    value = ssim(ref, spoiled, data_range=8.0)
    assert np.isfinite(value)
    assert abs(value - base) < 0.02
    # a wildly wrong but masked block does not matter either
    wrong = test.copy()
    wrong[20:23, 20:23] = 1e6
    mask = np.zeros(ref.shape, bool)
    mask[20:23, 20:23] = True
    assert_allclose(ssim(ref, wrong, data_range=8.0, mask=mask), value)


def test_ssim_too_small():
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(np.ones((5, 5)), np.ones((5, 5)), data_range=1.0)
    with pytest.raises(ValueError, match="constant"):
        ssim(np.ones((8, 8)), np.ones((8, 8)))


# --------------------------------------------------------------------------- kl
def test_kl_identical_zero_and_positive_otherwise(noisy_pair):
    ref, test = noisy_pair
    assert kl_divergence(ref, ref) == 0.0
    assert kl_divergence(ref, test) > 0.0
    # a narrower (denoised-like) histogram diverges more than a similar one
    narrow = 10 + 0.3 * (ref - 10)
    assert kl_divergence(ref, narrow) > kl_divergence(ref, test)


def test_kl_known_value_and_direction():
    ref = np.array([[0.0, 0.0, 1.0, 1.0]])
    test = np.array([[0.0, 0.0, 0.0, 1.0]])
    # P = (1/2, 1/2), Q = (3/4, 1/4)
    expected = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    assert_allclose(kl_divergence(ref, test, bins=2, range=(0, 1)), expected, rtol=1e-8)
    reverse = 0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5)
    assert_allclose(kl_divergence(test, ref, bins=2, range=(0, 1)), reverse, rtol=1e-8)
    # an empty test bin stays finite thanks to epsilon
    empty = np.zeros((1, 4))
    value = kl_divergence(ref, empty, bins=2, range=(0, 1), epsilon=1e-10)
    assert np.isfinite(value) and value > 10


def test_kl_bad_options(noisy_pair):
    ref, test = noisy_pair
    with pytest.raises(ValueError, match="bins"):
        kl_divergence(ref, test, bins=0)
    with pytest.raises(ValueError, match="range"):
        kl_divergence(ref, test, range=(2, 1))


# --------------------------------------------------------------------------- catalogue metrics
def test_snr_gain():
    assert snr_gain([20.0, 30.0, 5.0], [10.0, 10.0, 0.0]) == 2.5
    assert snr_gain([20.0, 30.0, 50.0], [10.0, 10.0, 10.0], statistic="median") == 3.0
    assert snr_gain([1.0, np.nan], [0.0, 2.0]) != snr_gain([1.0, np.nan], [0.0, 2.0])  # NaN
    with pytest.raises(ValueError, match="shape"):
        snr_gain([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="statistic"):
        snr_gain([1.0], [1.0], statistic="max")


def test_completeness_curve_values_and_units():
    flux = np.array([1.0, 2.0, 3.0, 4.0, 10.0]) * u.electron / u.s
    det = np.array([False, True, True, True, True])
    centres, comp, counts = completeness_curve(flux, det, bins=[0.5, 2.5, 4.5, 8.0, 12.0],
                                               log=False)
    assert centres.unit == u.electron / u.s
    assert_allclose(centres.value, [1.5, 3.5, 6.25, 10.0])
    assert_allclose(comp, [0.5, 1.0, np.nan, 1.0])
    assert counts.tolist() == [2, 2, 0, 1]
    # log bins: geometric centres spanning the fluxes, every source counted once
    centres, comp, counts = completeness_curve(flux.value, det, bins=2)
    assert counts.sum() == 5
    assert_allclose(centres, [10**0.25, 10**0.75])
    with pytest.raises(TypeError, match="boolean"):
        completeness_curve(flux, det.astype(int))
    with pytest.raises(ValueError, match="size"):
        completeness_curve(flux, det[:-1])


def test_depth_step_function():
    flux = np.logspace(0, 3, 3000)
    det = flux > 30.0
    value = depth(flux, det, bins=30)
    # the step lies in one log bin of width 0.1 dex: depth within it
    assert 30.0 / 10**0.1 < value < 30.0 * 10**0.1


def test_depth_smooth_completeness():
    rng = np.random.default_rng(3)
    flux = 10 ** rng.uniform(0, 3, 40000)
    f50 = 50.0
    prob = 1.0 / (1.0 + (f50 / flux) ** 4)
    det = rng.uniform(size=flux.size) < prob
    # completeness 0.9 at f50 * 9**(1/4)
    assert_allclose(depth(flux, det, level=0.9, bins=30), f50 * 9**0.25, rtol=0.05)
    assert_allclose(depth(flux, det, level=0.5, bins=30), f50, rtol=0.05)
    assert depth(flux * u.Jy, det, bins=30).unit == u.Jy


def test_depth_edge_cases():
    flux = np.logspace(0, 2, 100)
    assert depth(flux, np.ones(100, bool), bins=5) == pytest.approx(
        completeness_curve(flux, np.ones(100, bool), bins=5)[0][0])
    assert np.isnan(depth(flux, np.zeros(100, bool), bins=5))
    with pytest.raises(ValueError, match="level"):
        depth(flux, np.ones(100, bool), level=1.5)
