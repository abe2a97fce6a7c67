# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Bit-exact regression pins of the training code (CPU, fixed seeds).

The expected digests were computed with the code as it was before the
training modules were restructured (issue 12); a refactoring must leave them
unchanged.  A deliberate change of behaviour updates them in the same commit
and says why.  Everything here is tiny and made in the test (no
``../shared/data``, no network, no GalSim).
"""

import contextlib
import csv

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astro_unet.tests.helpers import digest as _digest
from astro_unet.training import (
    EXPOSURE_TABLE_COLUMNS,
    DataConfig,
    LossConfig,
    PairDataset,
    RealImageDataset,
    estimate_gain_from_noise,
    flux_context,
    load_config,
    measure_noise,
    train,
    training_loss,
)

torch = pytest.importorskip("torch")

NORM = {"unit": "electron", "transform": "asinh", "scale": "noise", "noise_factor": 3.0}
COND = ("ratio", "log_noise")


def _state_digest(state):
    """sha256 of a state dict (sorted keys, each name then its tensor as float32)."""
    parts = []
    for key, tensor in sorted(state.items()):
        parts.append(np.frombuffer(key.encode(), dtype=np.uint8))
        parts.append(tensor.detach().float().cpu().numpy())
    return _digest(*parts)


@contextlib.contextmanager
def _cpu_deterministic():
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def _star_field(shape, rng, n=10, sky=0.0):
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    img = np.full(shape, float(sky))
    for _ in range(n):
        y, x = rng.uniform(4, ny - 4), rng.uniform(4, nx - 4)
        f = np.exp(rng.uniform(np.log(2e3), np.log(2e5)))
        img += f / (2 * np.pi * 1.5 ** 2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.5)
    return img


def _write_pin_data(d):
    """Two small 'long exposures' (train, validation) in electron/s and their table."""
    rng = np.random.default_rng(20240512)
    rows = []
    for name, split, shape, sky in (("train.fits", "train", (72, 72), 200.0),
                                    ("val.fits", "validation", (48, 48), 150.0)):
        expect = _star_field(shape, rng, sky=sky)
        data = rng.poisson(expect).astype(np.float64) + rng.normal(0.0, 4.0, shape)
        data = (data / 500.0).astype(np.float32)
        if split == "train":
            data[:3, :20] = 0.0                   # padding: masked pixels
        fits.writeto(d / name, data)
        rows.append([name, "0", "", "electron/s", 0.0, "", "", 0.0, 500.0, "test", 1.0,
                     "test", 4.0, sky, False, 1.0, split, ""])
    Table(rows=rows, names=EXPOSURE_TABLE_COLUMNS).write(d / "table.ecsv", format="ascii.ecsv")
    return d


@pytest.fixture(scope="module")
def pin_dir(tmp_path_factory):
    return _write_pin_data(tmp_path_factory.mktemp("pin_data"))


def _dataset(pin_dir, schedule="mixed", seed=5):
    real = RealImageDataset(pin_dir, table=str(pin_dir / "table.ecsv"), split="train",
                            size=32, seed=1)
    data = DataConfig(synthetic_fraction=0.0, crop_size=32, ratio_schedule=schedule)
    return PairDataset(norm=NORM, cond_names=COND, data=data, real=real, seed=seed)


# ---------------------------------------------------------------------------
# (b) the dataset items


PAIR_ITEMS = {
    "epoch1": "6633b38c5d682998f54a7ecbaf969595e2ae61505de5a8466dccb3cdd6c6b17f",
    "mixed": "84f1cd50761958fb232358b1c6da329dc7e6fc5e7e0bd9ad296ef4e457bca50a",
    "paper": "8adfd7a081273cd8d0ea4e51ac7c499b4d3224cc1030e3c4dab28276833a660b",
    "real_crops": "05b1d462ea5a1be9fe5997adc0a804bc326e3f4c737e2c4532d511dd3a0c0200",
}


def _pair_item_digests(pin_dir):
    out = {}
    for schedule in ("mixed", "paper"):
        ds = _dataset(pin_dir, schedule)
        out[schedule] = _digest(*[a.numpy() for i in range(6) for a in ds[i]])
    ds = _dataset(pin_dir)
    ds.set_epoch(1)
    out["epoch1"] = _digest(*[a.numpy() for i in (0, 3, 11) for a in ds[i]])
    real = RealImageDataset(pin_dir, table=str(pin_dir / "table.ecsv"),
                            split=("train", "validation"), size=24, length=4, seed=2)
    items = [real[i] for i in range(4)]
    out["real_crops"] = _digest(*[np.asarray(it[k]) for it in items
                                  for k in ("image", "mask", "exposure_time")])
    return out


def test_pair_dataset_items(pin_dir):
    assert _pair_item_digests(pin_dir) == PAIR_ITEMS


# ---------------------------------------------------------------------------
# (c) the noise estimators


NOISE = {
    "background": (
        "background",
        "0x1.40917075ef255p+1",
        "0x1.2c403e708f30bp+8",
        "background: V k^2 = (B+s) k + S + R^2 with B=119.9, sigma=7.201, F=1.00, R=5 e-",
    ),
    "drizzled": (
        "0x1.df9251d251809p+6",
        "0x1.c13fedb46031ep+1",
        "0x1.e16180329ad3cp+1",
        "0x1.729dc6a55efa5p+5",
        22363,
    ),
    "masked": (
        "0x1.df8d73cdf2c12p+6",
        "0x1.cd9d821ea9d11p+2",
        "0x1.0000000000000p+0",
        "0x1.a03053c5a5ad4p+5",
        22589,
    ),
    "photon_transfer": (
        "photon transfer",
        "0x1.f3b9514feba9ep+1",
        "0x1.f5077c21c614bp+3",
        (
            "photon transfer: Theil-Sen slope of variance vs signal over 20 bins "
            "(-0.2..195), 95 % interval 3.222..5.98, F=1.15"
        ),
    ),
    "subtracted": (
        "background",
        "0x1.27ed9579ac5c9p+1",
        "0x1.152c2bf7c11d9p+8",
        "background: V k^2 = (B+s) k + S + R^2 with B=19.89, sigma=7.201, F=1.00, s=100",
    ),
    "white": (
        "0x1.df8cd5f451a35p+6",
        "0x1.ccded850abdbfp+2",
        "0x1.0000000000000p+0",
        "0x1.9ed8cdaee6286p+5",
        23027,
    ),
}


def _noise_values():
    rng = np.random.default_rng(77)
    shape = (160, 160)
    scene = _star_field(shape, rng, n=25, sky=300.0)
    counts = rng.poisson(scene).astype(np.float64) + rng.normal(0.0, 5.0, shape)
    image = counts / 2.5                            # 2.5 electrons per unit
    drizzled = (image[:-1, :-1] + image[1:, 1:] + image[1:, :-1] + image[:-1, 1:]) / 4.0
    mask = np.zeros(shape, dtype=bool)
    mask[10:20, 30:60] = True
    out = {}
    for name, data, kw in (("white", image, {}), ("masked", image, {"mask": mask}),
                           ("drizzled", drizzled, {})):
        n = measure_noise(data, **kw)
        out[name] = (n.background.hex(), n.sigma.hex(), n.correlation.hex(),
                     n.variance.hex(), n.n_background)
    est = estimate_gain_from_noise(image, read_noise=5.0)
    out["background"] = (est.method, est.gain.hex(), est.sky_level.hex(), est.description)
    est = estimate_gain_from_noise(image - 100.0, sky_subtracted=True, subtracted_sky=100.0)
    out["subtracted"] = (est.method, est.gain.hex(), est.sky_level.hex(), est.description)
    # photon transfer: extended bright sources on a faint subtracted sky
    yy, xx = np.mgrid[0:200, 0:200]
    truth = np.full((200, 200), 20.0)
    for _ in range(25):
        cy, cx = rng.uniform(0, 200, 2)
        amp, s = rng.uniform(100, 3000), rng.uniform(1.5, 4)
        truth += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s ** 2))
    est = estimate_gain_from_noise((rng.poisson(truth) - 20.0) / 5.0, sky_subtracted=True)
    out["photon_transfer"] = (est.method, est.gain.hex(), est.sky_level.hex(),
                              est.description)
    return out


def test_noise_estimators():
    assert _noise_values() == NOISE


# ---------------------------------------------------------------------------
# (a) optimisation steps on a fixed batch


STEPS = {
    "all_terms": (
        "f03418509f49a998d0defb5e4161b04525d70c1fe2253c9144360b219b02124f",
        [
            (
                "0x1.0a06600000000p+2",
                "0x1.a769540000000p-2",
                "0x1.d08bf40000000p+2",
                "0x1.a47be20000000p-2",
                "0x1.452a800000000p-2",
            ),
            (
                "0x1.d406200000000p+1",
                "0x1.892e0a0000000p-2",
                "0x1.95c6580000000p+2",
                "0x1.859a0e0000000p-2",
                "0x1.0cedbe0000000p-2",
            ),
            (
                "0x1.b1ca1c0000000p+1",
                "0x1.782d9e0000000p-2",
                "0x1.766af00000000p+2",
                "0x1.7449540000000p-2",
                "0x1.e6c5ca0000000p-3",
            ),
        ],
    ),
    "l1": (
        "fcffc2827166459fb602c8293fd1472d521862566fdb691dfd4c73f22522b1be",
        [
            (
                "0x1.ba79500000000p-2",
                "0x1.ba79500000000p-2",
                "0x0.0p+0",
                "0x0.0p+0",
                "0x0.0p+0",
            ),
            (
                "0x1.9c6a380000000p-2",
                "0x1.9c6a380000000p-2",
                "0x0.0p+0",
                "0x0.0p+0",
                "0x0.0p+0",
            ),
            (
                "0x1.8ba21a0000000p-2",
                "0x1.8ba21a0000000p-2",
                "0x0.0p+0",
                "0x0.0p+0",
                "0x0.0p+0",
            ),
        ],
    ),
}


def _step_digests(pin_dir):
    ds = _dataset(pin_dir)
    x, cond, target, valid = [torch.stack(t) for t in zip(*[ds[i] for i in range(4)])]
    out = {}
    with _cpu_deterministic():
        for name, loss, channels in (("l1", LossConfig(), 1),
                                     ("all_terms", LossConfig(l1=1.0, mse=0.5, kl=0.2,
                                                              nll=0.1), 2)):
            from astro_unet.model import AstroUNet

            torch.manual_seed(0)
            net = AstroUNet(base_channels=4, depth=2, cond_names=COND, residual=True,
                            out_channels=channels)
            opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
            kw = {}
            if loss.mse:
                scale, noise = flux_context(cond, normalization=NORM, cond_names=COND)
                kw = dict(x=x, scale=scale, noise=noise, transform="asinh")
            losses = []
            for _ in range(3):
                total, parts = training_loss(net(x, cond), target, valid, loss, **kw)
                opt.zero_grad()
                total.backward()
                opt.step()
                losses.append(tuple(float(v).hex() for v in
                                    (total.detach(), parts["l1"], parts["mse"], parts["kl"],
                                     parts["nll"])))
            out[name] = (_state_digest(net.state_dict()), losses)
    return out


def test_training_steps(pin_dir):
    assert _step_digests(pin_dir) == STEPS


# ---------------------------------------------------------------------------
# the loop: a tiny run, straight and resumed


RUN = {
    "checkpoint_keys": [
        "best",
        "config",
        "model",
        "optimizer",
        "rng",
        "scheduler",
        "step",
        "wall_time",
    ],
    "exported": "513d03141345708bd5186d81758bc710baa67e783149d0b6a24d60c61a749c9f",
    "log": [
        (
            "1",
            "0.003",
            "2.04284",
            "0.258086",
            "3.56951",
            "14.7112",
            "",
            "",
        ),
        (
            "2",
            "0.002265",
            "0.971149",
            "0.246558",
            "1.44918",
            "6.91183",
            "0.223274",
            "3.09299",
        ),
        (
            "3",
            "0.000795",
            "1.38502",
            "0.219105",
            "2.33184",
            "12.5343",
            "",
            "",
        ),
        (
            "4",
            "6e-05",
            "0.872142",
            "0.213466",
            "1.31735",
            "8.5683",
            "0.205754",
            "2.57297",
        ),
    ],
    "metadata_keys": [
        "created",
        "description",
        "instruments",
        "name",
        "ratios",
        "training",
        "units",
        "version",
    ],
    "model": "a1fc28d61e9aa9511b7ef2b3c64a18d9d0a3f9cced39cdd66c5a42fa7a924502",
    "moments": "a56544c05003ae50b064799c4ecb24feb0f5fb935dce59343cec36bedaea103c",
    "record_keys": [
        "astro_unet",
        "best_validation",
        "command",
        "config",
        "config_source",
        "data",
        "distributed",
        "exported",
        "machine",
        "planned_steps",
        "samples",
        "seed",
        "steps",
        "stopped_early",
        "validation",
        "wall_time_s",
    ],
    "scheduler": 4,
    "step": 4,
}


def _config(pin_dir, run_dir):
    return load_config({
        "run": {"name": "pin", "seed": 11, "device": "cpu", "run_dir": str(run_dir),
                "log_every": 1, "num_threads": 1},
        "model": {"base_channels": 4, "depth": 2, "cond_names": list(COND),
                  "residual": True},
        "normalization": dict(NORM),
        "data": {"data_dir": str(pin_dir), "exposure_table": str(pin_dir / "table.ecsv"),
                 "synthetic_fraction": 0.0, "crop_size": 32, "ratio_schedule": "mixed"},
        "optim": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "lr": 3e-3},
        "loss": {"l1": 1.0, "mse": 0.5},
        "validation": {"every": 2, "synthetic_scenes": 0, "blank_scenes": 0,
                       "ratios": [2.0], "l1_batches": 1, "real": True, "max_size": 32},
        "checkpoint": {"every": 2, "keep": 1},
    })


def _run_values(run_dir):
    from astro_unet.model import load_model_file

    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    opt = state["optimizer"]["state"]
    moments = [x for k in sorted(opt) for x in (opt[k]["exp_avg"], opt[k]["exp_avg_sq"])]
    with open(run_dir / "log.csv", newline="") as f:
        log = [tuple(r[c] for c in ("step", "lr", "loss", "l1", "mse", "grad_norm", "val_l1",
                                    "val_mse"))
               for r in csv.DictReader(f)]
    net, info = load_model_file(run_dir / "pin.pt")
    rec = info["metadata"]["training"]
    return {
        "step": state["step"],
        "model": _state_digest(state["model"]),
        "moments": _digest(*[m.numpy() for m in moments]),
        "scheduler": state["scheduler"]["last_epoch"],
        "checkpoint_keys": sorted(state),
        "log": log,
        "exported": _state_digest(net.state_dict()),
        "record_keys": sorted(rec),
        "metadata_keys": sorted(info["metadata"]),
    }


def _run_pins(pin_dir, tmp_path):
    straight = tmp_path / "straight"
    train(_config(pin_dir, straight), progress=False)
    split = tmp_path / "split"
    train(_config(pin_dir, split), progress=False, stop_at_step=2)
    train(_config(pin_dir, split), progress=False, resume=True)
    return _run_values(straight), _run_values(split)


def test_training_run_and_resume(pin_dir, tmp_path):
    straight, resumed = _run_pins(pin_dir, tmp_path)
    assert straight == RUN
    assert resumed == RUN
