# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Regression pins of the training code (CPU, fixed seeds).

The pins were first computed with the code as it was before the training
modules were restructured (issue 12); a refactoring must leave them unchanged.  A
deliberate change of behaviour updates them in the same commit and says why.
They were sha256 digests of the raw bytes (and hexadecimal floats) until
bit-exact digests differed between CPUs (another instruction set rounds the
last bits of float32 sums differently); they are now fingerprints, recomputed
with the code of the commit that made them
(`astro_unet.tests.helpers.fingerprint`: names, shapes, dtypes, masks and
integers exactly; the sum, the sum of squares and 8 fixed random projections
of the float values within 1.5e-5 of the data's norm), losses within
`LOSS_RTOL` and the noise estimators' float64 statistics within 1e-9.
Everything here is tiny and made in the test (no ``../shared/data``, no
network, no GalSim).
"""

import contextlib
import csv

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astro_unet.tests.helpers import assert_pins_close, fingerprint
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
# losses: float32 sums, whose last bits differ between CPUs (1e-7 relative
# measured), and log.csv, printed to 6 significant digits (one unit of the
# 6th digit is at most 1e-5 relative)
LOSS_RTOL = 2e-5


def _state_fingerprint(state):
    """
    Fingerprint of a state dict: its names, shapes and dtypes exactly (as a uint8
    array), then all its tensors, as float32, flattened into one array (sorted keys).
    """
    keys = sorted(state)
    names = ";".join(f"{k}{tuple(state[k].shape)}{state[k].dtype}" for k in keys)
    values = np.concatenate([state[k].detach().float().cpu().numpy().ravel() for k in keys])
    return fingerprint(np.frombuffer(names.encode(), dtype=np.uint8), values)


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
    'epoch1': [
        ('<f4', (3, 1, 32, 32), '1343e82bd05493b3',
         [4583.603666, 8595.580752, 30.51884705, 135.7298948, 4.62980284, -50.99067513,
          -38.50849242, 48.96225487, 91.5292293, 49.96633625]),
        ('<f4', (3, 2), '586683eab2d4400e',
         [14.4721185, 47.79130147, -6.56361001, -5.366215028, 3.405328065, -10.30507851,
          5.306553358, -8.149298967, 4.190484101, 5.629257102]),
        ('<f4', (3, 1, 32, 32), '1343e82bd05493b3',
         [4602.95072, 8594.487009, 23.15544448, 138.3600184, 0.4002424373, -68.3483286,
          -43.6585899, 44.61811159, 88.89816146, 36.82700505]),
        ('<f4', (3, 1, 32, 32), '1343e82bd05493b3',
         [3072.0, 3072.0, 6.62976071, 97.11280957, -3.669008083, -23.78295284, -26.15586847,
          -0.1968307109, 45.2806408, 8.797262416]),
    ],
    'mixed': [
        ('<f4', (6, 1, 32, 32), 'bd002f055345758f',
         [9672.768551, 17654.78923, 168.7998624, 12.73019241, -14.38551023, 56.24282001,
          -156.270575, 122.9617985, 101.8514248, 186.0022636]),
        ('<f4', (6, 2), 'c202a33f65785fb7',
         [25.22969484, 86.72460156, -6.574734068, -10.12729028, 0.2920391314, 3.110100039,
          -1.510898634, -10.269633, -4.191352459, -11.83545831]),
        ('<f4', (6, 1, 32, 32), 'bd002f055345758f',
         [9686.962774, 17631.80562, 170.6977229, 11.03192359, -22.91194074, 55.38181806,
          -148.1937728, 113.6474771, 106.5579072, 171.0982707]),
        ('<f4', (6, 1, 32, 32), 'bd002f055345758f',
         [6129.0, 6129.0, 104.0762987, -30.30284071, -26.33119289, 56.97523314, -68.12876496,
          55.93896649, 28.27793302, 97.33166077]),
    ],
    'paper': [
        ('<f4', (6, 1, 32, 32), 'bd002f055345758f',
         [9689.550425, 19033.05377, 258.4861656, -34.67408875, -7.569856965, 127.7969273,
          -40.12713536, 179.8448668, 115.1388407, 246.1517148]),
        ('<f4', (6, 2), 'c202a33f65785fb7',
         [25.79774356, 74.7450507, -4.99364913, -11.70846522, -2.704385397, 10.72227443,
          -4.790444494, -3.865281661, -4.970796325, -11.6510046]),
        ('<f4', (6, 1, 32, 32), 'bd002f055345758f',
         [9716.511653, 19029.51908, 278.6396984, -30.65670683, -1.592997996, 138.245937,
          -48.14350301, 180.7792524, 127.514045, 234.7094107]),
        ('<f4', (6, 1, 32, 32), 'bd002f055345758f',
         [6144.0, 6144.0, 103.7425703, -27.45196093, -26.35269918, 54.07790322, -67.38350348,
          59.57034769, 27.53433228, 96.1111762]),
    ],
    'real_crops': [
        ('<f4', (4, 24, 24), '0a16fcb9c9432b08',
         [872433.5779, 1651424275.0, -1213.908936, -30455.64152, 33270.99848, 32025.273,
          16221.7193, -49751.12752, 42759.29634, 21889.8261]),
        ('|b1', (4, 24, 24), 'a9a18b12a738f76d', []),
        ('<f8', (4,), 'ee46865cb79bd168',
         [2000.0, 1000000.0, 26.54617816, -26.07848641, -289.5286985, 416.7564999, -1743.87649,
          603.9683844, 884.5410944, -86.06655322]),
    ],
}


def _stacked(items):
    """The items' arrays, each stacked over the items (x, cond, target, valid)."""
    return fingerprint(*[np.stack([np.asarray(a) for a in arrays]) for arrays in zip(*items)])


def _pair_item_values(pin_dir):
    out = {}
    for schedule in ("mixed", "paper"):
        ds = _dataset(pin_dir, schedule)
        out[schedule] = _stacked([ds[i] for i in range(6)])
    ds = _dataset(pin_dir)
    ds.set_epoch(1)
    out["epoch1"] = _stacked([ds[i] for i in (0, 3, 11)])
    real = RealImageDataset(pin_dir, table=str(pin_dir / "table.ecsv"),
                            split=("train", "validation"), size=24, length=4, seed=2)
    items = [real[i] for i in range(4)]
    out["real_crops"] = _stacked([[it[k] for k in ("image", "mask", "exposure_time")]
                                  for it in items])
    return out


def test_pair_dataset_items(pin_dir):
    assert_pins_close(_pair_item_values(pin_dir), PAIR_ITEMS)


# ---------------------------------------------------------------------------
# (c) the noise estimators


NOISE = {
    'background': (
        'background', 2.504438455, 300.2509528,
        'background: V k^2 = (B+s) k + S + R^2 with B=119.9, sigma=7.201, F=1.00, R=5 e-',
    ),
    'drizzled': (119.8928902, 3.509763444, 3.760787987, 46.32703904, 22363),
    'masked': (119.8881371, 7.212738543, 1.0, 52.02359728, 22589),
    'photon_transfer': (
        'photon transfer',
        3.904092945,
        15.65716368,
        (
            'photon transfer: Theil-Sen slope of variance vs signal over 20 bins (-0.2..195), '
            '95 % interval 3.222..5.98, F=1.15'
        ),
    ),
    'subtracted': (
        'background', 2.311937985, 277.1725459,
        'background: V k^2 = (B+s) k + S + R^2 with B=19.89, sigma=7.201, F=1.00, s=100',
    ),
    'white': (119.8875349, 7.201101378, 1.0, 51.85586106, 23027),
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
        out[name] = (n.background, n.sigma, n.correlation, n.variance, n.n_background)
    est = estimate_gain_from_noise(image, read_noise=5.0)
    out["background"] = (est.method, est.gain, est.sky_level, est.description)
    est = estimate_gain_from_noise(image - 100.0, sky_subtracted=True, subtracted_sky=100.0)
    out["subtracted"] = (est.method, est.gain, est.sky_level, est.description)
    # photon transfer: extended bright sources on a faint subtracted sky
    yy, xx = np.mgrid[0:200, 0:200]
    truth = np.full((200, 200), 20.0)
    for _ in range(25):
        cy, cx = rng.uniform(0, 200, 2)
        amp, s = rng.uniform(100, 3000), rng.uniform(1.5, 4)
        truth += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s ** 2))
    est = estimate_gain_from_noise((rng.poisson(truth) - 20.0) / 5.0, sky_subtracted=True)
    out["photon_transfer"] = (est.method, est.gain, est.sky_level,
                              est.description)
    return out


def test_noise_estimators():
    # float64 statistics of float64 data: the last bits may differ between CPUs
    # (numpy's vectorised loops); an integer count or a printed value may not
    assert_pins_close(_noise_values(), NOISE, rtol=1e-9)


# ---------------------------------------------------------------------------
# (a) optimisation steps on a fixed batch


STEPS = {
    'all_terms': {
        'losses': [
            (4.156639099, 0.4134877324, 7.258542061, 0.4106288254, 0.3175449371),
            (3.65643692, 0.3839646876, 6.340230942, 0.3804704845, 0.2626256645),
            (3.388980389, 0.3673615158, 5.850276947, 0.3635609746, 0.2376819402),
        ],
        'model': [
            ('|u1', (624,), 'd762c908debb022f', []),
            ('<f4', (1722,), '5fe222e58722fd35',
             [-4.509979785, 15.17045328, 12.7921407, -0.6660780398, 1.113520625, 1.92550805,
              -2.835752651, 0.5883907788, -0.9168951583, 0.2295337499]),
        ],
    },
    'l1': {
        'losses': [
            (0.4321033955, 0.4321033955, 0.0, 0.0, 0.0),
            (0.4027489424, 0.4027489424, 0.0, 0.0, 0.0),
            (0.3863605559, 0.3863605559, 0.0, 0.0, 0.0),
        ],
        'model': [
            ('|u1', (624,), '612588cd6c3d6437', []),
            ('<f4', (1717,), '09b66e6dd84024ff',
             [-4.522305232, 14.60279379, 8.678517092, 4.293074215, 8.742260978, -0.4886802857,
              2.516527256, 5.116321173, -1.033389456, -3.87536773]),
        ],
    },
}


def _step_values(pin_dir):
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
                losses.append(tuple(float(v) for v in
                                    (total.detach(), parts["l1"], parts["mse"], parts["kl"],
                                     parts["nll"])))
            out[name] = {"model": _state_fingerprint(net.state_dict()), "losses": losses}
    return out


def test_training_steps(pin_dir):
    assert_pins_close(_step_values(pin_dir), STEPS, rtol=LOSS_RTOL)


# ---------------------------------------------------------------------------
# the loop: a tiny run, straight and resumed


RUN = {
    'checkpoint_keys': [
        'best', 'config', 'model', 'optimizer', 'rng', 'scheduler', 'step', 'wall_time',
    ],
    'exported': [
        ('|u1', (624,), '612588cd6c3d6437', []),
        ('<f4', (1717,), '09b66e6dd84024ff',
         [-0.01117014885, 13.25887497, -0.6538761198, 3.618550606, -2.36200124, -0.8672577506,
          -3.252306775, 1.483942718, 1.008978458, -5.944500298]),
    ],
    'log': [
        (1, 0.003, 2.04284, 0.258086, 3.56951, 14.7112, '', ''),
        (2, 0.002265, 0.971149, 0.246558, 1.44918, 6.91183, 0.223274, 3.09299),
        (3, 0.000795, 1.38502, 0.219105, 2.33184, 12.5343, '', ''),
        (4, 6e-05, 0.872142, 0.213466, 1.31735, 8.56831, 0.205754, 2.57297),
    ],
    'metadata_keys': [
        'created', 'description', 'instruments', 'name', 'ratios', 'training', 'units', 'version',
    ],
    'model': [
        ('|u1', (624,), '612588cd6c3d6437', []),
        ('<f4', (1717,), '09b66e6dd84024ff',
         [-0.01289125852, 13.25871879, -0.6541205882, 3.61852259, -2.362482068, -0.8671491599,
          -3.252525291, 1.483876376, 1.00939602, -5.944805911]),
    ],
    'moments': [
        ('<f4', (1717,), '09b66e6dd84024ff',
         [-0.007182397734, 0.1154905957, -0.09325787593, -0.10877305, 0.1881492889, -0.1660206876,
          0.6285453261, 0.3662579686, -0.01485390001, 0.3698711504]),
        ('<f4', (1717,), '09b66e6dd84024ff',
         [0.003994003673, 8.433949882e-06, 0.001341008122, -0.0009896176246, 0.002180152474,
          -0.0009324206055, 0.00447109543, 0.002244938638, 0.0001471894848, 0.003732420724]),
    ],
    'record_keys': [
        'astro_unet', 'best_validation', 'command', 'config', 'config_source', 'data',
        'distributed', 'exported', 'machine', 'planned_steps', 'samples', 'seed', 'steps',
        'stopped_early', 'validation', 'wall_time_s',
    ],
    'scheduler': 4,
    'step': 4,
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


def _number(text):
    """A value of log.csv: an int, a float (printed to 6 digits) or the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _run_values(run_dir):
    from astro_unet.model import load_model_file

    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    opt = state["optimizer"]["state"]
    moments = [x for k in sorted(opt) for x in (opt[k]["exp_avg"], opt[k]["exp_avg_sq"])]
    with open(run_dir / "log.csv", newline="") as f:
        log = [tuple(_number(r[c]) for c in ("step", "lr", "loss", "l1", "mse", "grad_norm",
                                             "val_l1", "val_mse"))
               for r in csv.DictReader(f)]
    net, info = load_model_file(run_dir / "pin.pt")
    rec = info["metadata"]["training"]
    return {
        "step": state["step"],
        "model": _state_fingerprint(state["model"]),
        "moments": fingerprint(*[np.concatenate([m.numpy().ravel() for m in moments[i::2]])
                                 for i in (0, 1)]),
        "scheduler": state["scheduler"]["last_epoch"],
        "checkpoint_keys": sorted(state),
        "log": log,
        "exported": _state_fingerprint(net.state_dict()),
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
    assert_pins_close(straight, RUN, rtol=LOSS_RTOL)
    assert_pins_close(resumed, RUN, rtol=LOSS_RTOL)
