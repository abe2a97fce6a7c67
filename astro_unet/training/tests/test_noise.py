# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_unet.training.noise: background noise, correlation and gain estimates."""

import numpy as np
import pytest
from scipy import ndimage

from astro_unet.training import estimate_gain_from_noise, measure_noise


def _drizzle_like(image):
    """Bilinear resampling by a (0.3, 0.6) pixel shift: lag-1 correlated noise."""
    w = np.outer([0.3, 0.7], [0.6, 0.4])
    return ndimage.convolve(image, w, mode="reflect")


# ---------------------------------------------------------------------------
# noise estimators
# ---------------------------------------------------------------------------

def test_measure_noise_white_and_correlated():
    rng = np.random.default_rng(3)
    white = rng.normal(50.0, 3.0, size=(300, 300))
    n = measure_noise(white)
    assert n.sigma == pytest.approx(3.0, rel=0.03)
    assert n.correlation == pytest.approx(1.0, abs=0.1)
    assert n.background == pytest.approx(50.0, abs=0.1)
    corr = measure_noise(_drizzle_like(white))
    w = np.outer([0.3, 0.7], [0.6, 0.4])
    expected_f = w.sum() ** 2 / (w ** 2).sum()          # 3.32
    assert corr.correlation == pytest.approx(expected_f, rel=0.08)
    # aperture-summing variance is preserved by the resampling
    assert corr.variance == pytest.approx(9.0, rel=0.08)


def test_measure_noise_ignores_sources_mask_and_zeros():
    rng = np.random.default_rng(4)
    img = rng.normal(100.0, 2.0, size=(200, 200))
    yy, xx = np.mgrid[0:200, 0:200]
    for cy, cx in [(50, 50), (120, 80), (160, 160)]:
        img += 5000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0 ** 2))
    img[:, :30] = 0.0                          # drizzle padding
    img[100:110, 100:110] = 1e6                # masked junk
    mask = np.zeros(img.shape, bool)
    mask[100:110, 100:110] = True
    n = measure_noise(img, mask=mask)
    assert n.sigma == pytest.approx(2.0, rel=0.05)
    assert n.background == pytest.approx(100.0, abs=0.2)


def test_measure_noise_errors():
    with pytest.raises(ValueError, match="2-D"):
        measure_noise(np.zeros(10))
    with pytest.raises(ValueError, match="usable pixels"):
        measure_noise(np.zeros((20, 20)))


def test_gain_background_method_with_read_noise():
    rng = np.random.default_rng(5)
    gain, sky, ron = 2.5, 150.0, 8.0          # e-/adu, e-, e-
    electrons = rng.poisson(sky, size=(250, 250)) + rng.normal(0, ron, size=(250, 250))
    data = electrons / gain
    est = estimate_gain_from_noise(data, read_noise=ron)
    assert est.method == "background"
    assert est.gain == pytest.approx(gain, rel=0.05)
    assert est.sky_level == pytest.approx(sky, rel=0.05)
    # ignoring the read noise underestimates the gain (conservative)
    naive = estimate_gain_from_noise(data)
    assert naive.gain < est.gain


def test_gain_background_method_corrects_drizzle_correlation():
    rng = np.random.default_rng(6)
    t = 800.0                                  # exposure time = electrons per (e/s)
    rate = rng.poisson(0.1 * t, size=(300, 300)) / t
    drz = _drizzle_like(rate)
    est = estimate_gain_from_noise(drz)
    assert est.gain == pytest.approx(t, rel=0.1)
    assert est.noise.correlation > 2.5
    # the raw pixel variance would overestimate the exposure time by ~F
    raw = est.noise.background / est.noise.sigma ** 2
    assert raw > 2.5 * t


def test_gain_with_known_subtracted_sky():
    rng = np.random.default_rng(7)
    k, sky = 4.0, 400.0
    data = rng.poisson(sky, size=(200, 200)) / k - sky / k     # sky subtracted
    with pytest.raises(ValueError, match="sky was subtracted"):
        estimate_gain_from_noise(data, method="background")
    in_units = estimate_gain_from_noise(data, sky_subtracted=True, subtracted_sky=sky / k)
    in_e = estimate_gain_from_noise(data, sky_subtracted=True, subtracted_sky_electrons=sky)
    assert in_units.gain == pytest.approx(k, rel=0.05)
    assert in_e.gain == pytest.approx(k, rel=0.05)
    assert in_e.sky_level == pytest.approx(sky, rel=0.1)


def test_gain_photon_transfer_on_sources():
    # a rough estimator (see its docstring): the median over three scenes
    # must land within 50 % of the true gain
    gains = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        k, sky = 5.0, 20.0
        yy, xx = np.mgrid[0:300, 0:300]
        truth = np.full((300, 300), sky)
        for _ in range(30):
            cy, cx = rng.uniform(0, 300, 2)
            amp, s = rng.uniform(100, 3000), rng.uniform(1.5, 4)
            truth += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s ** 2))
        data = (rng.poisson(truth) - sky) / k     # sky subtracted, level unknown
        est = estimate_gain_from_noise(data, sky_subtracted=True)
        assert est.method == "photon transfer"
        assert "95 % interval" in est.description
        gains.append(est.gain)
    assert np.median(gains) == pytest.approx(5.0, rel=0.5)


def test_gain_photon_transfer_refuses_pure_noise():
    rng = np.random.default_rng(9)
    data = rng.normal(0.0, 1.0, size=(200, 200))
    with pytest.raises(ValueError, match="not constrained"):
        estimate_gain_from_noise(data, sky_subtracted=True)
    with pytest.raises(ValueError, match="Unknown method"):
        estimate_gain_from_noise(data, method="guess")
