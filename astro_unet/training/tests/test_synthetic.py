# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_unet.training.synthetic (needs the optional GalSim)."""

import time
from dataclasses import replace

import numpy as np
import pytest

galsim = pytest.importorskip("galsim")

from astro_unet.training import SceneConfig, pure_sky_scene, render_scene  # noqa: E402
from astro_unet.training import synthetic  # noqa: E402

#: small PSF kernels keep the (cached) GalSim PSF builds cheap in the tests
SMALL = dict(psf_size=33)


def _sparse(instrument="wfc3_uvis", **kw):
    base = dict(n_stars=(60, 60), n_galaxies=(32, 32), cluster_probability=0.0,
                nebula_probability=0.0, background=(0.0, 0.0), edge_margin=24,
                galaxy_flux=(1.0, 1e3), hlr_range=(0.04, 0.3), **SMALL)
    base.update(kw)
    return SceneConfig.for_instrument(instrument, **base)


@pytest.mark.parametrize("instrument", ["wfc3_uvis", "acs_wfc", "ground"])
def test_shape_dtype_positive(instrument):
    cfg = SceneConfig.for_instrument(instrument, **SMALL)
    truth, info = render_scene((48, 80), config=cfg, seed=3)
    assert truth.shape == (48, 80) and truth.dtype == np.float32
    assert np.all(np.isfinite(truth)) and truth.min() >= 0
    assert info["instrument"] == instrument
    assert info["pixel_scale"] == synthetic.INSTRUMENTS[instrument]["pixel_scale"]
    square, _ = render_scene(40, config=cfg, seed=3)
    assert square.shape == (40, 40)


def test_reproducible_and_seeds_differ():
    cfg = SceneConfig.for_instrument("wfc3_uvis", **SMALL)
    a, ia = render_scene(64, config=cfg, seed=11)
    b, ib = render_scene(64, config=cfg, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia["stars"]["flux"], ib["stars"]["flux"])
    c, _ = render_scene(64, config=cfg, seed=12)
    assert not np.array_equal(a, c)


def test_flux_conservation():
    cfg = _sparse()
    for seed in range(3):
        truth, info = render_scene(128, config=cfg, seed=seed)
        injected = info["stars"]["flux"].sum() + info["galaxies"]["flux"].sum()
        assert len(info["stars"]) > 0 and len(info["galaxies"]) > 0
        # objects >= 24 px from the edges: at most the far wings of the
        # largest galaxies fall outside
        assert truth.sum() == pytest.approx(injected, rel=0.01)
        assert truth.sum() <= injected * (1 + 1e-5)
        assert info["total_flux"] == pytest.approx(injected, rel=1e-6)
    # stars alone (PSF kernel 33 px, 24 px from the edges): nothing is lost
    truth, info = render_scene(128, config=replace(cfg, n_galaxies=(0, 0)), seed=7)
    assert truth.sum() == pytest.approx(info["stars"]["flux"].sum(), rel=1e-4)
    # with sky and nebula the total still adds up
    cfg2 = replace(cfg, background=(0.01, 0.01), nebula_probability=1.0)
    truth, info = render_scene(128, config=cfg2, seed=4)
    assert info["nebula_flux"] > 0
    assert truth.sum() == pytest.approx(info["total_flux"], rel=1e-3)


def test_bright_stars_at_brightest_pixels():
    cfg = _sparse(n_stars=(20, 20), n_galaxies=(0.0, 0.0), aberration_rms=0.0,
                  star_flux=(100.0, 1e4), edge_margin=20)
    truth, info = render_scene(160, config=cfg, seed=5)
    stars = info["stars"]
    assert len(stars) >= 3
    brightest = stars[np.argmax(stars["flux"])]
    y, x = np.unravel_index(np.argmax(truth), truth.shape)
    assert abs(x - brightest["x"]) <= 0.75 and abs(y - brightest["y"]) <= 0.75
    for star in stars:
        iy, ix = int(round(star["y"])), int(round(star["x"]))
        win = truth[iy - 2:iy + 3, ix - 2:ix + 3]
        py, px = np.unravel_index(np.argmax(win), win.shape)
        if star["flux"] > 10 * np.sort(stars["flux"])[0]:
            assert abs(px - 2 + ix - star["x"]) <= 0.75
            assert abs(py - 2 + iy - star["y"]) <= 0.75
        assert star["peak"] <= star["flux"]
    # positions are on the quarter-pixel grid of the PSF phases
    np.testing.assert_array_equal(stars["x"] * 4, np.round(stars["x"] * 4))


def test_hst_psf_has_spikes_and_ground_psf_matches_seeing():
    cfg = _sparse(psf_size=65, aberration_rms=0.0)
    kernels, sampled, desc = synthetic._draw_psf(cfg, np.random.default_rng(1))
    assert desc["kind"] == "OpticalPSF" and desc["nstruts"] == 4
    assert 0.03 < desc["fwhm_arcsec"] < 0.1
    assert kernels.shape == (4, 4, 65, 65)
    np.testing.assert_allclose(kernels.sum(axis=(2, 3)), 1.0)
    assert sampled.sum() == pytest.approx(1.0)
    psf = kernels[0, 0]
    assert np.unravel_index(np.argmax(psf), psf.shape) == (32, 32)
    # diffraction spikes: on a ring of radius 12 px the strut directions are
    # far brighter than the azimuthal median
    yy, xx = np.mgrid[0:65, 0:65]
    ring = np.abs(np.hypot(yy - 32, xx - 32) - 12) < 0.5
    assert psf[ring].max() > 5 * np.median(psf[ring])
    # the scene's info describes the same kind of PSF
    _, info = render_scene(64, config=cfg, seed=1)
    assert info["psf"]["kind"] == "OpticalPSF"
    gcfg = _sparse("ground", seeing=(1.2, 1.2))
    gk, _, gdesc = synthetic._draw_psf(gcfg, np.random.default_rng(2))
    assert gdesc["kind"] in ("Moffat", "Kolmogorov")
    assert gdesc["fwhm_arcsec"] == pytest.approx(1.2, rel=0.2)
    ring = np.abs(np.hypot(yy[:33, :33] - 16, xx[:33, :33] - 16) - 8) < 0.5
    assert gk[0, 0][ring].max() < 1.5 * np.median(gk[0, 0][ring])   # round, no spikes


def test_cluster_nebula_background_options():
    cfg = SceneConfig.for_instrument(
        "wfc3_uvis", n_stars=(5, 5), n_galaxies=(0, 0), cluster_probability=1.0,
        cluster_stars=(300, 300), nebula_probability=1.0, background=(0.05, 0.05),
        background_gradient=0.2, **SMALL)
    truth, info = render_scene(96, config=cfg, seed=8)
    cl = info["cluster"]
    assert cl is not None and cl["n_stars"] == info["stars"]["cluster"].sum() > 100
    in_cl = info["stars"][info["stars"]["cluster"]]
    r = np.hypot(in_cl["x"] - cl["x"], in_cl["y"] - cl["y"])
    assert np.median(r) < cl["tidal_radius"]
    assert info["nebula_flux"] > 0
    assert info["background"]["level"] == pytest.approx(0.05)
    assert abs(info["background"]["gradient_x"]) <= 0.2
    assert truth.min() >= 0.05 * (1 - 0.2) - 1e-6


def test_number_counts_many_faint_few_bright():
    cfg = _sparse(n_stars=(2000, 2000), edge_margin=0, n_galaxies=(0, 0))
    _, info = render_scene(64, config=cfg, seed=9)
    f = np.asarray(info["stars"]["flux"])
    lo, hi = cfg.star_flux
    assert f.min() >= lo and f.max() <= hi
    assert np.sum(f < 10 * lo) > 10 * np.sum(f > 100 * lo)


def test_pure_sky_scene():
    cfg = SceneConfig.for_instrument("ground", background=(20.0, 20.0),
                                     background_gradient=0.1)
    sky, info = pure_sky_scene((32, 48), config=cfg, seed=1)
    assert sky.shape == (32, 48) and sky.dtype == np.float32
    assert len(info["stars"]) == 0 and len(info["galaxies"]) == 0
    assert sky.mean() == pytest.approx(20.0, rel=1e-5)
    assert sky.max() / sky.min() < 1.1 / 0.9
    # a plane: second differences vanish
    np.testing.assert_allclose(np.diff(sky, 2, axis=1), 0, atol=1e-4)
    again, _ = pure_sky_scene((32, 48), config=cfg, seed=1)
    np.testing.assert_array_equal(sky, again)


def test_errors():
    with pytest.raises(ValueError, match="Unknown instrument"):
        SceneConfig(instrument="jwst")
    with pytest.raises(ValueError, match="odd"):
        SceneConfig(psf_size=64)
    with pytest.raises(ValueError, match="low, high"):
        SceneConfig(n_stars=(10, 1))
    cfg = SceneConfig.for_instrument("ground")
    with pytest.raises(ValueError, match="contradicts"):
        render_scene(32, instrument="acs_wfc", config=cfg)
    with pytest.raises(ValueError, match="rng or seed"):
        render_scene(32, config=cfg, rng=1, seed=1)
    with pytest.raises(ValueError, match="shape"):
        render_scene((0, 5), config=cfg)
    with pytest.raises(TypeError, match="SceneConfig"):
        render_scene(32, config={"instrument": "ground"})


def test_timing_256():
    # default configuration (PSF kernel 129 px); the first call may build
    # and cache the GalSim PSF
    t0 = time.perf_counter()
    render_scene((256, 256), instrument="wfc3_uvis", seed=21)
    t1 = time.perf_counter()
    render_scene((256, 256), instrument="wfc3_uvis", seed=21)
    t2 = time.perf_counter()
    assert t1 - t0 < 5.0
    assert t2 - t1 < 1.5
