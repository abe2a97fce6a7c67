# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Measured training pairs: repeated exposures (Noise2Noise-style) and their use in training."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astro_unet.training import (
    EXPOSURE_TABLE_COLUMNS,
    ConfigError,
    DataConfig,
    MeasuredPairs,
    PairDataset,
    load_config,
    repeated_exposure_pairs,
)

NORM = {"unit": "electron", "transform": "asinh", "scale": "noise", "noise_factor": 3.0}


def _frames(n=4, shape=(64, 48), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    scene = 50.0 + 4000.0 * np.exp(-((yy - 30.3) ** 2 + (xx - 20.7) ** 2) / 4.0)
    return scene, [rng.poisson(scene) + rng.normal(0, 5.0, shape) for _ in range(n)]


def test_repeated_exposure_pairs_are_each_frame_against_the_mean_of_the_others():
    _, frames = _frames(4)
    masks = [np.zeros(frames[0].shape, bool) for _ in frames]
    masks[2][5, 6] = True
    before = [f.copy() for f in frames]
    pairs = repeated_exposure_pairs(frames, exptime=5.0, read_noise=5.0, masks=masks)
    assert len(pairs) == 4
    for k, p in enumerate(pairs):
        others = [f for j, f in enumerate(frames) if j != k]
        good = ~p.mask
        np.testing.assert_allclose(p.input[good], frames[k][good], rtol=1e-6)
        np.testing.assert_allclose(p.target[good], np.mean(others, axis=0)[good], rtol=1e-5)
        assert p.ratio == 3.0 and p.exptime == 5.0 and p.read_noise == 5.0
        # a pixel bad in one frame is bad in every pair
        assert p.mask[5, 6] and p.mask.sum() == 1
        assert p.source == f"repeated:{k}"
    for f, b in zip(frames, before):                  # the inputs are not modified
        np.testing.assert_array_equal(f, b)
    # the target's noise is that of n - 1 frames: its variance is 1 / (n - 1) of a frame's
    diff_in = np.var(pairs[0].input - pairs[1].input)
    diff_target = np.var(pairs[0].target - pairs[1].target)
    # target_0 - target_1 = (f1 - f0) / 3
    assert diff_target == pytest.approx(diff_in / 9, rel=1e-5)


def test_repeated_exposure_rows_hold_out_the_rest_and_errors():
    _, frames = _frames(3)
    pairs = repeated_exposure_pairs(frames, exptime=1.0, read_noise=1.0, rows=(10, 40))
    assert pairs[0].input.shape == (30, 48)
    np.testing.assert_allclose(pairs[0].input, frames[0][10:40], rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2 frames"):
        repeated_exposure_pairs(frames[:1], exptime=1.0, read_noise=1.0)
    with pytest.raises(ValueError, match="one shape"):
        repeated_exposure_pairs([frames[0], frames[1][:10]], exptime=1.0, read_noise=1.0)
    with pytest.raises(ValueError, match="rows must be"):
        repeated_exposure_pairs(frames, exptime=1.0, read_noise=1.0, rows=(40, 10))
    with pytest.raises(ValueError, match="one mask"):
        repeated_exposure_pairs(frames, exptime=1.0, read_noise=1.0, masks=[None])


def test_measured_pairs_crop_input_and_target_alike():
    rng = np.random.default_rng(3)
    x = rng.random((64, 80)).astype(np.float32) + 1.0
    from astro_unet.training import Pair

    pair = Pair(input=x, target=2 * x, mask=np.zeros(x.shape, bool), ratio=3.0, exptime=2.0,
                read_noise=1.0, dark_current=0.0, sky=0.0, sky_subtracted=False,
                source="test", noiseless_target=False)
    measured = MeasuredPairs([pair])
    for seed in range(8):
        p = measured.pair(np.random.default_rng(seed), size=32)
        assert p.input.shape == (32, 32) and p.ratio == 3.0 and p.exptime == 2.0
        np.testing.assert_array_equal(p.target, 2 * p.input)   # same crop, same flip
        assert not p.noiseless_target
    with pytest.raises(ValueError, match="at least one pair"):
        MeasuredPairs([])


def test_pair_dataset_draws_measured_pairs_with_their_own_ratio():
    _, frames = _frames(5, shape=(64, 64))
    measured = MeasuredPairs(repeated_exposure_pairs(frames, exptime=5.0, read_noise=5.0))
    data = DataConfig(crop_size=32, synthetic_fraction=1.0, measured_fraction=1.0,
                      repeated_exposures=(("a", "b"),))
    ds = PairDataset(norm=NORM, cond_names=["ratio", "log_noise"], data=data,
                     measured=measured, seed=1)
    p = ds.pair(0)
    assert p.ratio == 4.0 and p.source.startswith("repeated:")
    x, cond, target, valid = ds.arrays(0)
    assert x.shape == (32, 32) and cond[0] == 4.0 and valid.all()
    with pytest.raises(ValueError, match="needs measured pairs"):
        PairDataset(norm=NORM, cond_names=["ratio"], data=data, seed=1)


@pytest.mark.parametrize("overrides, match", [
    ({"data.measured_fraction": 0.2}, "needs data.repeated_exposures or data.pair_table"),
    ({"data.measured_fraction": 1.5}, r"measured_fraction must be in \[0, 1\]"),
    ({"data.repeated_exposures": [["a.fits"]]}, "at least 2 frames"),
    ({"data.repeated_rows": [5, 2]}, r"repeated_rows must be \[start, stop\]"),
])
def test_measured_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("smoke", overrides=[f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def test_training_with_repeated_exposures(tmp_path):
    """A tiny run whose pairs are all repeated exposures; the record names the frames."""
    from astro_unet.training import train

    _, frames = _frames(3, shape=(96, 96), seed=5)
    rows = []
    for k, f in enumerate(frames):
        name = f"frame{k}.fits"
        fits.writeto(tmp_path / name, f.astype(np.float32))
        rows.append([name, "0", "", "electron", 0.0, "", "", 0.0, 5.0, "test", 1.0, "test",
                     5.0, 50.0, False, 1.0, "realnoise", ""])
    # one real image for the simulated part of the data (train and validation splits)
    for split in ("train", "validation"):
        fits.writeto(tmp_path / f"{split}.fits", (frames[0] / 5.0).astype(np.float32))
        rows.append([f"{split}.fits", "0", "", "electron/s", 0.0, "", "", 0.0, 5.0, "test",
                     1.0, "test", 5.0, 50.0, False, 1.0, split, ""])
    table = Table(rows=rows, names=EXPOSURE_TABLE_COLUMNS)
    table.write(tmp_path / "table.ecsv", format="ascii.ecsv")
    run_dir = tmp_path / "run"
    cfg = load_config({
        "run": {"name": "tiny-measured", "seed": 3, "device": "cpu", "run_dir": str(run_dir),
                "log_every": 1, "num_threads": 1},
        "model": {"base_channels": 4, "depth": 2, "cond_names": ["ratio", "log_noise"],
                  "residual": True},
        "normalization": dict(NORM),
        "data": {"data_dir": str(tmp_path), "exposure_table": str(tmp_path / "table.ecsv"),
                 "synthetic_fraction": 0.0, "crop_size": 32, "measured_fraction": 0.5,
                 "repeated_exposures": [[r[0] for r in rows[:3]]],
                 "repeated_rows": [0, 64]},
        "optim": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "lr": 1e-3},
        "validation": {"every": 2, "synthetic_scenes": 0, "blank_scenes": 0,
                       "ratios": [2.0], "l1_batches": 1, "real": True},
        "checkpoint": {"every": 2, "keep": 1},
    })
    path = train(cfg, progress=False)
    with open(path.replace(".pt", ".json")) as f:
        record = json.load(f)["metadata"]["training"]
    files = record["data"]["files"]
    measured = [f for f in files if f["split"].startswith("repeated")]
    assert [f["path"] for f in measured] == ["frame0.fits", "frame1.fits", "frame2.fits"]
    assert measured[0]["split"] == "repeated exposures (rows [0, 64])"
    assert all(len(f["sha256"]) == 64 for f in measured)
    assert record["config"]["data"]["measured_fraction"] == 0.5


def _wcs(crpix):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = list(crpix)
    w.wcs.cdelt = [-1e-5, 1e-5]
    return w


def test_pair_table_pairs_align_the_long_exposure_onto_the_short_grid(tmp_path):
    pytest.importorskip("reproject")
    from astro_unet.training import pair_table_pairs

    rng = np.random.default_rng(7)
    shape = (80, 80)
    yy, xx = np.mgrid[: shape[0], : shape[1]]

    def stars(dy, dx):
        img = np.full(shape, 2.0)
        for y, x in ((20.3, 30.1), (50.7, 55.2), (62.1, 15.8), (35.5, 65.4)):
            img += 300.0 * np.exp(-((yy - y - dy) ** 2 + (xx - x - dx) ** 2) / 4.0)
        return img

    # the long exposure (400 s) points 3 px further in x and 2 px in y: integer shift
    long_rate = stars(2.0, 3.0)
    short_rate = stars(0.0, 0.0)
    hdr_l = _wcs((41.0 + 3.0, 41.0 + 2.0)).to_header()
    hdr_l.update(BUNIT="electron/s", EXPTIME=400.0)
    hdr_s = _wcs((41.0, 41.0)).to_header()
    hdr_s.update(BUNIT="electron", EXPTIME=100.0, RDNOISE=3.0)
    fits.writeto(tmp_path / "long.fits", long_rate.astype(np.float32), hdr_l)
    fits.writeto(tmp_path / "short.fits",
                 (rng.poisson(short_rate * 100.0)).astype(np.float32), hdr_s)
    Table({"short": ["short.fits"], "long": ["long.fits"]}).write(tmp_path / "pairs.ecsv")
    pairs = pair_table_pairs(tmp_path / "pairs.ecsv", data_dir=tmp_path)
    (p,) = pairs
    assert p.ratio == 4.0 and p.exptime == 100.0 and p.read_noise == 3.0
    assert p.input.shape == shape and p.source == "pair:short.fits"
    good = ~p.mask
    # the target is the long exposure's rate on the short grid, in electrons of 100 s
    np.testing.assert_allclose(p.target[good], (short_rate * 100.0)[good], rtol=1e-3)
    # pixels the long exposure does not cover are masked in both
    assert p.mask[:, -3:].all() and p.mask[-2:, :].all() and good.sum() > 0.8 * p.mask.size
    with pytest.raises(ValueError, match="columns 'short' and 'long'"):
        pair_table_pairs(Table({"short": ["short.fits"]}), data_dir=tmp_path)
