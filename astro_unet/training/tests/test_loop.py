# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Tests of the training pipeline: configuration, pairs, dataset, loss, loop,
checkpoint/resume, export, command line and a 2-process Gloo run.

Everything runs on tiny networks and tiny images made here (real-image
fixture in ``tmp_path``); GalSim is needed only by the synthetic-scene tests.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table

from astro_unet.training import (
    EXPOSURE_TABLE_COLUMNS,
    ConfigError,
    DataConfig,
    LossConfig,
    PairDataset,
    RealImageDataset,
    TrainingConfig,
    builtin_configs,
    load_config,
    network_arrays,
    real_pair,
    schedule_ratio,
    synthetic_pair,
    train,
    training_loss,
)

NORM = {"unit": "electron", "transform": "asinh", "scale": "noise", "noise_factor": 3.0}


# ---------------------------------------------------------------------------
# a tiny real-image data directory


def _star_field(shape, n, rng, flux=(2e3, 2e5), sigma=1.5, sky=0.0):
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    img = np.full(shape, float(sky))
    for _ in range(n):
        y, x = rng.uniform(4, ny - 4), rng.uniform(4, nx - 4)
        f = np.exp(rng.uniform(np.log(flux[0]), np.log(flux[1])))
        img += f / (2 * np.pi * sigma ** 2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2)
                                                     / (2 * sigma ** 2))
    return img


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    """Two 'long exposures' in electrons (train, validation) and their exposure table."""
    d = tmp_path_factory.mktemp("realdata")
    rng = np.random.default_rng(42)
    rows = []
    for name, split, shape, sky in (("train.fits", "train", (96, 96), 200.0),
                                    ("val.fits", "validation", (64, 64), 150.0)):
        expect = _star_field(shape, 12, rng, sky=sky)
        data = rng.poisson(expect).astype(np.float32) + rng.normal(0, 4.0, shape)
        data = (data / 500.0).astype(np.float32)          # electron/s of a 500 s exposure
        if split == "train":
            data[:3, :20] = 0.0                           # drizzle-like padding
        fits.writeto(d / name, data)
        rows.append([name, "0", "", "electron/s", 0.0, "", "", 0.0, 500.0, "test", 1.0,
                     "test", 4.0, sky, False, 1.0, split, ""])
    table = Table(rows=rows, names=EXPOSURE_TABLE_COLUMNS)
    table.write(d / "table.ecsv", format="ascii.ecsv")
    return d


def _tiny(real_dir, run_dir, **over):
    """A tiny real-data configuration dict (no GalSim needed)."""
    cfg = {
        "run": {"name": "tiny", "seed": 3, "device": "cpu", "run_dir": str(run_dir),
                "log_every": 1, "num_threads": 1},
        "model": {"base_channels": 4, "depth": 2, "cond_names": ["ratio", "log_noise"],
                  "residual": True},
        "normalization": dict(NORM),
        "data": {"data_dir": str(real_dir), "exposure_table": str(real_dir / "table.ecsv"),
                 "synthetic_fraction": 0.0, "crop_size": 32, "ratio_schedule": "mixed"},
        "optim": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "lr": 3e-3},
        "validation": {"every": 2, "synthetic_scenes": 0, "blank_scenes": 1,
                       "synthetic_size": 32, "ratios": [2.0], "l1_batches": 1, "real": True},
        "checkpoint": {"every": 2, "keep": 1},
    }
    for key, value in over.items():
        section, name = key.split("__")
        cfg.setdefault(section, {})[name] = value
    return cfg


def _state(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------
# configuration


def test_builtin_configs_and_roundtrip():
    from astro_unet.model import DEFAULT_CONFIG, PAPER_CONFIG

    assert builtin_configs() == ["default", "paper", "smoke"]
    default = load_config("default")
    assert default.model.channels == DEFAULT_CONFIG.channels
    assert default.model.residual is DEFAULT_CONFIG.residual
    assert default.model.cond_names == ("ratio", "log_noise")
    assert default.normalization["scale"] == "noise"
    paper = load_config("paper.toml")
    assert paper.model.channels == PAPER_CONFIG.channels == (32, 64, 128, 256, 512)
    assert paper.data.ratio_schedule == "paper"
    assert paper.data.paper_ratios == (2.0, 3.0, 4.0, 5.0)
    smoke = load_config("smoke")
    assert smoke.data.synthetic_fraction == 1.0 and smoke.optim.steps < 20
    for cfg in (default, paper, smoke):
        again = TrainingConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again.to_dict() == cfg.to_dict()
    changed = default.replace(["optim.steps=12", "run.device='cpu'", "data.sky.ground=[1, 2]"])
    assert changed.optim.steps == 12 and changed.run.device == "cpu"
    assert changed.data.sky["ground"] == (1.0, 2.0)
    assert changed.data.sky["wfc3_uvis"] == default.data.sky["wfc3_uvis"]


@pytest.mark.parametrize("overrides, match", [
    ({"data.foo": 1}, r"unknown key 'data\.foo'.*known keys of \[data\]"),
    ({"bogus.key": 1}, r"unknown table \[bogus\]"),
    ({"model.width": 8}, r"unknown key 'model\.width'"),
    ({"optim.steps": "ten"}, r"optim\.steps must be an integer"),
    ({"run.amp": 1}, r"run\.amp must be true or false"),
    ({"data.ratio_schedule": "random"}, r"data\.ratio_schedule must be one of"),
    ({"data.crop_size": 100}, r"multiple of 16"),
    ({"loss.nll": 1.0, "model.out_channels": 1}, r"out_channels = 2"),
    ({"data.instruments": {"jwst": 1.0}}, r"unknown instrument 'jwst'"),
    ({"data.t_long": [100, 10]}, r"data\.t_long must be a \[low, high\] pair"),
    ({"model.depth": 1}, r"depth must be >= 2"),
])
def test_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("default", overrides=overrides)


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nsteps = 10\nlearnig_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.learnig_rate' in .*bad\.toml"):
        load_config(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[optim\nsteps = 10\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    with pytest.raises(FileNotFoundError, match="neither a file nor a shipped"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config("smoke", overrides=["optim.steps"])


# ---------------------------------------------------------------------------
# ratio schedules and pairs


def test_ratio_schedules():
    paper = [schedule_ratio(i, schedule="paper", seed=5) for i in range(12)]
    assert [r for _, r in paper] == [2.0, 3.0, 4.0, 5.0] * 3
    assert len({k for k, _ in paper[:4]}) == 1 and paper[3][0] != paper[4][0]
    cont = np.array([schedule_ratio(i, schedule="continuous", seed=5)[1] for i in range(4000)])
    assert cont.min() >= 1.5 and cont.max() <= 10.0
    # log-uniform: the median is the geometric mean of the range
    assert np.median(cont) == pytest.approx(np.sqrt(15.0), rel=0.05)
    assert len({schedule_ratio(i, schedule="continuous", seed=5)[0] for i in range(8)}) == 8
    mixed = [schedule_ratio(4 * g, schedule="mixed", seed=5) for g in range(400)]
    frac_paper = np.mean([k[0] == 0 for k, _ in mixed])
    assert 0.4 < frac_paper < 0.6
    # deterministic in (seed, epoch, index), changing with them
    once = schedule_ratio(9, schedule="mixed", seed=5)
    assert once == schedule_ratio(9, schedule="mixed", seed=5)
    other = [schedule_ratio(i, schedule="continuous", seed=5, epoch=1)[1] for i in range(20)]
    assert not np.allclose(other, cont[:20])
    with pytest.raises(ValueError, match="schedule must be one of"):
        schedule_ratio(0, schedule="random")


def test_synthetic_pair_statistics():
    rng = np.random.default_rng(0)
    truth = np.zeros((128, 128))
    truth[:, 64:] = 2.0                                    # e-/s
    t_long, r, ron, dark = 900.0, 3.0, 3.1, 0.002
    p = synthetic_pair(truth, ratio=r, t_long=t_long, sky_rate=0.3, sky_subtracted=True,
                       read_noise=ron, dark_current=dark, rng=rng)
    # the target is the noiseless truth at the short-exposure scale, in electrons
    np.testing.assert_allclose(p.target, truth * t_long / r, rtol=1e-6)
    assert p.exptime == t_long / r and p.noiseless_target and p.sky == pytest.approx(270.0)
    assert p.input.dtype == np.float32 and not p.mask.any()
    diff = (p.input - p.target).astype(float)
    # mean preserved, variance = Poisson(source + sky) + RON^2 + dark
    for sl, lam in ((np.s_[:, :64], 90.0), (np.s_[:, 64:], 90.0 + 600.0)):
        assert diff[sl].mean() == pytest.approx(0.0, abs=4 * np.sqrt(lam / diff[sl].size) + 0.1)
        expected = lam + ron ** 2 + dark * t_long / r
        assert diff[sl].var() == pytest.approx(expected, rel=0.05)
    # sky present: part of input and target (with a gentle gradient), no larger noise
    q = synthetic_pair(truth, ratio=r, t_long=t_long, sky_rate=0.3, sky_subtracted=False,
                       read_noise=ron, rng=np.random.default_rng(1))
    assert q.target[:, :64].mean() == pytest.approx(90.0, rel=0.1)
    assert np.ptp(q.target[:, :64]) > 0          # the gradient
    lam = float(q.target[:, :64].mean())
    assert (q.input - q.target)[:, :64].var() == pytest.approx(lam + ron ** 2, rel=0.05)


def test_real_pair_input_noisier_than_target():
    rng = np.random.default_rng(3)
    mu = _star_field((128, 128), 10, rng, sky=80.0)       # expected long-exposure electrons
    long_ron = 4.0
    crop = rng.poisson(mu) + rng.normal(0, long_ron, mu.shape)
    mask = np.zeros(mu.shape, bool)
    mask[:4, :4] = True
    for r in (1.5, 2.0, 5.0):
        p = real_pair(crop, mask=mask, exptime=600.0, ratio=r, read_noise=3.0,
                      rng=np.random.default_rng(int(r * 10)))
        np.testing.assert_allclose(p.target, (crop / r).astype(np.float32))
        assert p.exptime == 600.0 / r and not p.noiseless_target
        good = ~mask
        target_noise = (p.target - mu / r)[good].var()          # the target's own noise
        input_noise = (p.input - p.target)[good].astype(float).var()
        expected_target = (mu[good].mean() + long_ron ** 2) / r ** 2
        assert target_noise == pytest.approx(expected_target, rel=0.1)
        # every input is clearly noisier than its target (about r times)
        assert input_noise > 1.3 * target_noise
        assert input_noise > 0.8 * r * target_noise
        # masked pixels get no noise and stay masked
        assert p.mask[:4, :4].all()
        np.testing.assert_allclose(p.input[:4, :4], (crop / r)[:4, :4], rtol=1e-6)
    # sky subtracted: the subtracted sky's photon noise is restored
    flat = rng.poisson(np.full((128, 128), 100.0)) - 100.0
    p = real_pair(flat, exptime=100.0, ratio=2.0, read_noise=0.0, sky_level=100.0,
                  sky_subtracted=True, rng=np.random.default_rng(0))
    assert (p.input - p.target).var() == pytest.approx(50.0, rel=0.06)


def test_network_arrays_use_denoise_transform():
    from astro_unet._normalization import network_input

    rng = np.random.default_rng(2)
    p = synthetic_pair(_star_field((64, 64), 5, rng) / 100.0, ratio=4.0, t_long=800.0,
                       sky_rate=0.2, read_noise=3.1, rng=rng)
    p.mask[10:12, 10:12] = True
    x, cond, target, valid = network_arrays(p, norm=NORM, cond_names=["ratio", "log_noise"])
    x_ref, cond_ref, ctx = network_input(p.input, norm=NORM, ratio=4.0, exptime=200.0,
                                         read_noise=3.1, cond_names=("ratio", "log_noise"),
                                         bad=p.mask)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(cond, cond_ref)
    assert cond[0] == 4.0 and cond[1] == pytest.approx(np.log10(ctx["noise"]), rel=1e-6)
    scale = 3.0 * ctx["noise"]
    good = valid > 0
    np.testing.assert_allclose(target[good], np.arcsinh(p.target / scale)[good], rtol=1e-5)
    assert valid[10:12, 10:12].sum() == 0 and target[10:12, 10:12].sum() == 0
    assert valid.sum() == 64 * 64 - 4


def test_pair_dataset_real(real_dir):
    table = str(real_dir / "table.ecsv")
    real = RealImageDataset(real_dir, table=table, split="train", size=32)
    data = DataConfig(synthetic_fraction=0.0, crop_size=32, ratio_schedule="paper")
    ds = PairDataset(norm=NORM, cond_names=["ratio", "log_noise"], data=data, real=real, seed=4)
    ds2 = PairDataset(norm=NORM, cond_names=["ratio", "log_noise"], data=data, real=real, seed=4)
    x, cond, target, valid = ds[5]
    assert tuple(x.shape) == (1, 32, 32) and tuple(cond.shape) == (2,)
    assert tuple(target.shape) == (1, 32, 32) and tuple(valid.shape) == (1, 32, 32)
    for a, b in zip(ds[5], ds2[5]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the paper schedule: four ratios of one crop, each with its own noise
    pairs = [ds.pair(i) for i in range(4)]
    assert [p.ratio for p in pairs] == [2.0, 3.0, 4.0, 5.0]
    for p in pairs[1:]:
        np.testing.assert_allclose(p.target * p.ratio, pairs[0].target * 2.0, rtol=1e-5)
        assert not np.array_equal(p.input, pairs[0].input)
    assert all(p.source == "real:train.fits" and p.exptime == 500.0 / p.ratio for p in pairs)
    ds.set_epoch(1)
    assert not np.array_equal(ds[5][0].numpy(), ds2[5][0].numpy())
    # crops touching the zero padding: those pixels are invalid
    n_invalid = [float((1 - ds.arrays(i)[3]).sum()) for i in range(40)]
    assert max(n_invalid) > 0
    with pytest.raises(ValueError, match="needs real images"):
        PairDataset(norm=NORM, cond_names=["ratio"], data=DataConfig(synthetic_fraction=0.5))


def test_synthetic_pool_and_dataset(tmp_path):
    pytest.importorskip("galsim")
    from astro_unet.training import SyntheticScenePool

    cache = tmp_path / "pool.npz"
    pool = SyntheticScenePool(3, size=48, seed=7, cache=cache, empty_fraction=0.0)
    assert cache.exists() and len(pool) == 3
    again = SyntheticScenePool(3, size=48, seed=7, cache=cache, empty_fraction=0.0)
    for a, b in zip(pool.scenes, again.scenes):
        np.testing.assert_array_equal(a, b)
    assert again.description["n_stars"] == pool.description["n_stars"]
    assert all(s.min() >= 0 and s.max() > 0 for s in pool.scenes)
    data = DataConfig(synthetic_fraction=1.0, crop_size=32, scene_size=48)
    ds = PairDataset(norm=NORM, cond_names=["ratio", "log_noise"], data=data, pool=pool, seed=1)
    for i in range(8):
        p = ds.pair(i)
        assert p.source.startswith("synthetic:") and p.noiseless_target
        assert 60.0 <= p.exptime * p.ratio <= 5000.0
        x, cond, target, valid = (a.numpy() for a in ds[i])
        assert np.isfinite(x).all() and np.isfinite(target).all() and valid.min() == 1.0


# ---------------------------------------------------------------------------
# loss and one optimisation step


def test_training_loss_terms():
    import torch

    target = torch.randn(2, 1, 8, 8)
    valid = torch.ones(2, 1, 8, 8)
    valid[0, 0, :4] = 0
    pred = target.clone()
    pred[0, 0, :4] += 5.0                                   # errors only where invalid
    total, parts = training_loss(pred, target, valid, LossConfig(l1=1.0, kl=1.0))
    assert float(parts["l1"]) == 0.0 and float(parts["kl"]) == 0.0 and float(total) == 0.0
    pred = target + 0.5
    total, parts = training_loss(pred, target, valid, LossConfig(l1=1.0, kl=0.5))
    # invalid pixels take the target's values in the distribution term: 3/4 of the pixels
    assert float(parts["l1"]) == pytest.approx(0.5)
    assert float(parts["kl"]) == pytest.approx(0.5 * 96 / 128)
    assert float(total) == pytest.approx(0.5 + 0.5 * 0.375)
    # Laplace NLL: minimum at b = |error|, and no gradient into the image channel
    logb = torch.full((2, 1, 8, 8), np.log(0.5), requires_grad=True)
    mean = (target + 0.5).requires_grad_(True)
    total, parts = training_loss(torch.cat([mean, logb], 1), target, valid,
                                 LossConfig(l1=0.0, kl=0.0, nll=1.0))
    total.backward()
    assert float(parts["nll"]) == pytest.approx(1.0 + np.log(0.5))
    assert float(logb.grad.abs().max()) < 1e-6 and mean.grad is None or \
        float(mean.grad.abs().max()) == 0.0


def test_mse_loss_is_chi_squared_in_linear_flux():
    import torch

    # scale 30 e, noise 10 e; input 0.5 scales = 15 e above the level: var = 100 + 15
    x = torch.full((1, 1, 2, 2), float(np.arcsinh(0.5)))
    target = torch.full((1, 1, 2, 2), float(np.arcsinh(1.0)))        # 30 e
    pred = torch.full((1, 1, 2, 2), float(np.arcsinh(0.0)))          # 0 e
    scale, noise = torch.full((1, 1, 1, 1), 30.0), torch.full((1, 1, 1, 1), 10.0)
    valid = torch.ones(1, 1, 2, 2)
    total, parts = training_loss(pred, target, valid, LossConfig(l1=0.0, mse=1.0, huber=100.0),
                                 x=x, scale=scale, noise=noise)
    assert float(parts["mse"]) == pytest.approx(0.5 * 30.0 ** 2 / 115.0, rel=1e-5)
    assert float(total) == pytest.approx(float(parts["mse"]))
    # Huber tail beyond |chi| = 1
    _, parts = training_loss(pred, target, valid, LossConfig(l1=0.0, mse=1.0, huber=1.0),
                             x=x, scale=scale, noise=noise)
    chi = 30.0 / np.sqrt(115.0)
    assert float(parts["mse"]) == pytest.approx(chi - 0.5, rel=1e-5)
    with pytest.raises(ValueError, match="needs x, scale and noise"):
        training_loss(pred, target, valid, LossConfig(l1=0.0, mse=1.0))
    with pytest.raises(ValueError, match="'asinh' or 'linear'"):
        training_loss(pred, target, valid, LossConfig(l1=0.0, mse=1.0), x=x, scale=scale,
                      noise=noise, transform="anscombe")


@pytest.mark.parametrize("weights, expected", [({"mse": 1.0, "l1": 0.0}, "mean"),
                                               ({"mse": 0.0, "l1": 1.0}, "median")])
def test_mse_loss_estimates_the_mean_flux_and_l1_the_median(weights, expected):
    """A faint source on an empty sky: the flux posterior is skewed; only mse gives its mean."""
    import torch

    rng = np.random.default_rng(3)
    # one input value, many possible true fluxes (electrons): mostly sky, sometimes a source
    flux = np.where(rng.random(4096) < 0.2, rng.exponential(40.0, 4096), 0.0)
    scale, noise = torch.full((1, 1, 1, 1), 30.0), torch.full((1, 1, 1, 1), 10.0)
    target = torch.asinh(torch.tensor(flux / 30.0, dtype=torch.float32)).view(1, 1, 64, 64)
    x = torch.zeros_like(target)
    valid = torch.ones_like(target)
    p = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.02)
    for _ in range(600):
        loss, _ = training_loss(p.expand_as(target).reshape(1, 1, 64, 64), target, valid,
                                LossConfig(huber=100.0, **weights), x=x, scale=scale,
                                noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    estimate = 30.0 * float(torch.sinh(p.detach()))
    want = flux.mean() if expected == "mean" else np.median(flux)
    assert estimate == pytest.approx(want, abs=0.3)
    assert flux.mean() - np.median(flux) > 5.0            # the two differ clearly


def test_flux_context_and_config_checks():
    import torch

    from astro_unet.training import ConfigError, flux_context, load_config

    norm = {"unit": "electron", "transform": "asinh", "scale": 12.0}
    scale, noise = flux_context(torch.tensor([[2.0, 0.0], [3.0, 1.0]]), normalization=norm,
                                cond_names=["ratio", "log_noise"])
    assert scale.flatten().tolist() == [12.0, 12.0] and noise.flatten().tolist() == [1.0, 10.0]
    with pytest.raises(ValueError, match="log_noise"):
        flux_context(torch.zeros(1, 1), normalization=norm, cond_names=["ratio"])
    with pytest.raises(ConfigError, match="log_noise"):
        load_config("smoke").replace({"loss.mse": 1.0, "model.cond_names": ["ratio"]})
    with pytest.raises(ConfigError, match="'asinh' or 'linear'"):
        load_config("smoke").replace({"loss.mse": 1.0, "normalization.transform": "anscombe"})
    with pytest.raises(ConfigError, match="huber"):
        load_config("smoke").replace({"loss.huber": 0.0})


def test_warm_start_loads_the_weights_of_a_model_file(tmp_path):
    import torch

    from astro_unet.model import AstroUNet, save_model
    from astro_unet.training import load_config
    from astro_unet.training.loop import _warm_start

    config = load_config("smoke")
    torch.manual_seed(5)
    source = AstroUNet(config.model)
    path = tmp_path / "init.pt"
    save_model(source, path, normalization=dict(config.normalization), half=False)
    model = AstroUNet(config.model)
    _warm_start(model, str(path), config)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    other = config.replace({"model.base_channels": 8})
    with pytest.raises(ValueError, match="another architecture"):
        _warm_start(AstroUNet(other.model), str(path), other)


def test_warm_start_grows_a_one_channel_model_into_an_uncertainty_head(tmp_path):
    import torch

    from astro_unet.model import AstroUNet, save_model
    from astro_unet.training import load_config
    from astro_unet.training.loop import _warm_start

    config = load_config("smoke")
    torch.manual_seed(6)
    source = AstroUNet(config.model)
    path = tmp_path / "init.pt"
    save_model(source, path, normalization=dict(config.normalization), half=False)
    two = config.replace({"model.out_channels": 2})
    model = AstroUNet(two.model)
    _warm_start(model, str(path), two)
    x = torch.randn(1, 1, 32, 32)
    cond = torch.tensor([[2.0, 0.0]])[:, :len(config.model.cond_names)]
    with torch.no_grad():
        a, b = source(x, cond), model(x, cond)
    torch.testing.assert_close(b[:, :1], a)            # the image channel is unchanged
    assert float(b[:, 1].abs().max()) == 0.0           # log b starts at zero
    # a two-channel model does not shrink into a one-channel one
    path2 = tmp_path / "two.pt"
    save_model(model, path2, normalization=dict(two.normalization), half=False)
    with pytest.raises(ValueError, match="another architecture"):
        _warm_start(AstroUNet(config.model), str(path2), config)


def test_optimisation_reduces_loss_on_fixed_batch(real_dir):
    import torch

    from astro_unet.model import AstroUNet

    real = RealImageDataset(real_dir, table=str(real_dir / "table.ecsv"), split="train",
                            size=32)
    data = DataConfig(synthetic_fraction=0.0, crop_size=32)
    ds = PairDataset(norm=NORM, cond_names=["ratio", "log_noise"], data=data, real=real, seed=0)
    batch = [torch.stack(t) for t in zip(*[ds[i] for i in range(4)])]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny tensors: threads only contend
    torch.manual_seed(0)
    net = AstroUNet(base_channels=4, depth=2, cond_names=("ratio", "log_noise"), residual=True)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, _ = training_loss(net(batch[0], batch[1]), batch[2], batch[3], LossConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    torch.set_num_threads(threads)
    assert losses[-1] < 0.8 * losses[0]


# ---------------------------------------------------------------------------
# the loop: determinism, resume, export, time limit


@pytest.fixture(scope="module")
def full_run(real_dir, tmp_path_factory):
    """A 4-step tiny run (shared by several tests)."""
    run_dir = tmp_path_factory.mktemp("run_full")
    cfg = load_config(_tiny(real_dir, run_dir))
    path = train(cfg, progress=False)
    return cfg, path, run_dir


def test_train_seed_determinism_and_resume(real_dir, full_run, tmp_path):
    import torch

    cfg, _, run_dir = full_run
    ref = _state(run_dir / "last.pt")
    assert ref["step"] == 4
    # the same seed in another directory: identical parameters
    other = train(load_config(_tiny(real_dir, tmp_path / "again")), progress=False)
    assert os.path.isfile(other)
    same = _state(tmp_path / "again" / "last.pt")
    for k in ref["model"]:
        torch.testing.assert_close(same["model"][k], ref["model"][k], rtol=0, atol=0)
    # 2 steps, checkpoint, resume, 2 more steps: the same as 4 straight
    split_cfg = load_config(_tiny(real_dir, tmp_path / "split"))
    train(split_cfg, progress=False, stop_at_step=2)
    half = _state(tmp_path / "split" / "last.pt")
    assert half["step"] == 2
    assert not torch.equal(half["model"]["head.weight"], ref["model"]["head.weight"])
    train(split_cfg, progress=False, resume=tmp_path / "split")
    resumed = _state(tmp_path / "split" / "last.pt")
    assert resumed["step"] == 4
    for k in ref["model"]:
        torch.testing.assert_close(resumed["model"][k], ref["model"][k], rtol=0, atol=1e-6)
    for a, b in zip(resumed["optimizer"]["state"].values(), ref["optimizer"]["state"].values()):
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], rtol=0, atol=1e-9)
    # the log was continued, not duplicated
    steps = [int(line.split(",")[0]) for line in
             (tmp_path / "split" / "log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps.count(3) == 1
    val_steps = [json.loads(line)["step"] for line in
                 (tmp_path / "split" / "validation.jsonl").read_text().splitlines()]
    assert val_steps == [2, 4]
    # a different seed gives different parameters
    cfg3 = load_config(_tiny(real_dir, tmp_path / "seed4", run__seed=4))
    train(cfg3, progress=False)
    diff = _state(tmp_path / "seed4" / "last.pt")
    assert not torch.equal(diff["model"]["head.weight"], ref["model"]["head.weight"])


def test_logs_checkpoints_and_validation(full_run):
    cfg, _, run_dir = full_run
    lines = (run_dir / "log.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["step", "lr", "loss", "l1"] and "val_f_measure" in header
    assert "val_f_r2" in header
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert [int(r["step"]) for r in rows if r["loss"]] == [1, 2, 3, 4]
    val_rows = [r for r in rows if r["val_l1"]]
    assert [int(r["step"]) for r in val_rows] == [2, 4]
    assert all(0 <= float(r["val_f_measure"]) <= 1 for r in val_rows)
    assert all(float(r["val_blank_detections"]) >= 0 for r in val_rows)
    # learning rate: warm-up then cosine decay
    lrs = [float(r["lr"]) for r in rows if r["loss"]]
    assert lrs[0] == pytest.approx(3e-3) and lrs[-1] < lrs[1]
    base = json.loads((run_dir / "validation_baseline.json").read_text())
    assert {c["image"] for c in base["cases"]} == {"real:val.fits", "blank0:acs_wfc"}
    assert base["val_tpr"] > 0.5
    ckpts = sorted(p.name for p in run_dir.glob("checkpoint-*.pt"))
    assert ckpts == ["checkpoint-00000004.pt"]                  # keep = 1
    state = _state(run_dir / "last.pt")
    assert set(state) >= {"model", "optimizer", "scheduler", "step", "rng", "config"}
    assert state["config"] == cfg.to_dict()
    assert set(state["rng"]) >= {"python", "numpy", "torch"}


def test_export_record_loads_and_denoises(full_run):
    from astro_unet import denoise_ccd
    from astro_unet.model import load_model_file

    cfg, path, run_dir = full_run
    assert path == os.path.abspath(run_dir / "tiny.pt")
    net, info = load_model_file(path)
    assert info["config"] == cfg.model
    # the export adds the tile overlap measured on the trained network
    from astro_unet.denoise import recommended_overlap

    assert info["normalization"] == dict(cfg.normalization, overlap=recommended_overlap(net))
    meta = info["metadata"]
    assert meta["name"] == "tiny" and meta["version"] == "1" and meta["created"]
    assert meta["ratios"]["schedule"] == "mixed" and meta["instruments"] == ["real:train.fits"]
    rec = meta["training"]
    assert rec["seed"] == 3 and rec["steps"] == 4 and rec["samples"] == 16
    assert rec["config"] == cfg.to_dict() and rec["command"]
    assert rec["data"]["files"][0]["path"] == "train.fits"
    assert rec["data"]["files"][0]["split"] == "train"
    assert len(rec["data"]["files"][0]["sha256"]) == 64
    assert rec["data"]["validation_files"] == ["val.fits"]
    assert rec["wall_time_s"] > 0 and rec["machine"]["torch"]
    assert rec["validation"]["val_l1"] > 0
    side = json.loads((run_dir / "tiny.json").read_text())
    assert side["sha256"] == info["sha256"] and side["metadata"]["training"]["steps"] == 4
    # the exported model denoises a frame in the package's own inference path
    rng = np.random.default_rng(0)
    frame = rng.poisson(_star_field((48, 48), 4, rng, sky=30.0)).astype(float)
    ccd = CCDData(frame, unit=u.electron, meta=fits.Header({"EXPTIME": 50.0}))
    out = denoise_ccd(ccd, ratio=3.0, model=path, device="cpu")
    assert out.shape == (48, 48) and np.isfinite(out.data).all()
    assert out.header["EXPTIME"] == 150.0


def test_time_limit_stops_and_exports(real_dir, tmp_path):
    cfg = load_config(_tiny(real_dir, tmp_path / "limited", optim__steps=500,
                            run__time_limit_minutes=0.001, validation__every=0,
                            checkpoint__every=0))
    path = train(cfg, progress=False)
    state = _state(tmp_path / "limited" / "last.pt")
    assert 1 <= state["step"] < 500
    from astro_unet.model import load_model_file

    rec = load_model_file(path)[1]["metadata"]["training"]
    assert rec["stopped_early"] and rec["planned_steps"] == 500


def test_best_export_and_bad_normalization(real_dir, tmp_path):
    from astro_unet.model import load_model_file

    cfg = load_config(_tiny(real_dir, tmp_path / "best", checkpoint__export="best"))
    path = train(cfg, progress=False)
    rec = load_model_file(path)[1]["metadata"]["training"]
    assert rec["exported"].startswith("best (step ")
    bad = _tiny(real_dir, tmp_path / "bad")
    bad["normalization"] = {"unit": "adu", "transform": "asinh", "scale": 1.0}
    with pytest.raises(ValueError, match="normalization"):
        train(load_config(bad), progress=False)


# ---------------------------------------------------------------------------
# command line and torchrun


def _write_toml(d, path):
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = []
    for section, table in d.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli(real_dir, tmp_path, capsys):
    import argparse

    from astro_unet.training.cli import add_train_command, main

    toml = _write_toml(_tiny(real_dir, tmp_path / "cli"), tmp_path / "tiny.toml")
    out = tmp_path / "cli-model.pt"
    status = main(["--config", str(toml), "--steps", "2", "--output", str(out),
                   "--set", "validation.every=0", "--no-progress"])
    assert status == 0
    assert capsys.readouterr().out.strip() == str(out)
    from astro_unet.model import load_model_file

    assert load_model_file(out)[1]["metadata"]["training"]["steps"] == 2
    assert main(["--config", str(toml), "--set", "optim.stepz=2"]) == 1
    assert "unknown key 'optim.stepz'" in capsys.readouterr().err
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_train_command(sub)
    args = parser.parse_args(["train", "--config", "smoke", "--time-limit", "9",
                              "--device", "cpu", "--resume", "auto"])
    assert args.time_limit == 9.0 and args.resume == "auto" and callable(args.func)


def test_distributed_gloo_two_processes(real_dir, tmp_path):
    """torchrun with 2 CPU processes (Gloo): both ranks end with identical parameters."""
    pytest.importorskip("torch.distributed.run")
    cfg = _tiny(real_dir, tmp_path / "ddp", validation__every=0, validation__blank_scenes=0,
                validation__real=False)
    toml = _write_toml(cfg, tmp_path / "ddp.toml")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", "-m", "astro_unet.training", "--config", str(toml),
           "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    side = json.loads((tmp_path / "ddp" / "tiny.json").read_text())
    dist = side["metadata"]["training"]["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo"
    assert len(dist["parameter_digests"]) == 2 and dist["ranks_identical"]
    assert side["metadata"]["training"]["steps"] == 4
    assert res.stdout.strip() == str(tmp_path / "ddp" / "tiny.pt")     # rank 0 only
    # the global batch is split over the ranks: the same as one process with the whole batch
    import torch

    train(load_config(_tiny(real_dir, tmp_path / "single", validation__every=0,
                            validation__blank_scenes=0, validation__real=False)),
          progress=False)
    single = _state(tmp_path / "single" / "last.pt")["model"]
    ddp = _state(tmp_path / "ddp" / "last.pt")["model"]
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=0, atol=1e-5)
