# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The training loop: `train` trains, validates, checkpoints and exports a model.

`train` (``python -m astro_unet.training``, ``astro-unet train``) trains an
`~astro_unet.model.AstroUNet` as a `~astro_unet.training.TrainingConfig`
says and exports it with `~astro_unet.model.save_model`; `training_loss`
and `flux_context` are its loss.  Its Notes say what a run does.
"""

import contextlib
import copy
import csv
import datetime
import json
import math
import os
import platform
import random
import shlex
import sys
import time
import warnings

import numpy as np

from .._inference import state_sha256
from .._utils import sha256_file
from ._console import ProgressBar, message
from .config import TrainingConfig, load_config


# pytest-doctestplus: these examples render synthetic scenes (GalSim)
__doctest_requires__ = {("train",): ["galsim"]}

__all__ = ["train", "CSV_COLUMNS", "training_loss", "flux_context"]

#: Columns of ``log.csv`` (followed by ``val_f_r<ratio>`` for each validation ratio).
CSV_COLUMNS = ("step", "lr", "loss", "l1", "mse", "kl", "nll", "grad_norm", "samples_per_s",
               "seconds", "val_l1", "val_mse", "val_f_measure", "val_tpr", "val_precision",
               "val_rfe", "val_blank_detections")

# seed streams of the validation data (never used for training)
_VAL_POOL = 9001
_VAL_COND = 9002
_VAL_NOISE = 9003
_VAL_REAL = 9004
_VAL_LONG = 9005


# ---------------------------------------------------------------------------
# small helpers


def _atomic_torch_save(obj, path):
    import torch

    from .._utils import atomic_output

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path) as tmp:      # the user's umask, stale temporaries removed
        torch.save(obj, tmp)


def _lr_factor(step, optim):
    """Learning-rate multiplier at ``step``: linear warm-up, then cosine decay."""
    warm = optim.warmup_steps
    if warm and step < warm:
        return (step + 1) / warm
    span = max(optim.steps - warm, 1)
    progress = min(max(step - warm, 0) / span, 1.0)
    floor = optim.min_lr_fraction
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def flux_context(cond, *, normalization, cond_names):
    """
    Per-sample normalization scale and background noise for the ``mse`` loss.

    Parameters
    ----------
    cond : `torch.Tensor`
        (B, n_cond) conditioning vectors of a batch.
    normalization : dict
        The model's normalization (``scale`` a number or ``"noise"``).
    cond_names : sequence of str
        Names of the conditioning values; must include ``"log_noise"``.

    Returns
    -------
    scale, noise : `torch.Tensor`
        (B, 1, 1, 1): the normalization scale and the input's background
        noise, both in the model unit (electrons).

    Examples
    --------
    >>> import torch
    >>> from astro_unet.training import flux_context
    >>> norm = {"unit": "electron", "transform": "asinh", "scale": "noise",
    ...         "noise_factor": 3.0}
    >>> scale, noise = flux_context(torch.tensor([[2.0, 1.0]]), normalization=norm,
    ...                             cond_names=["ratio", "log_noise"])
    >>> float(scale), float(noise)
    (30.0, 10.0)
    """
    import torch

    names = list(cond_names)
    if "log_noise" not in names:
        raise ValueError("the mse loss needs the 'log_noise' conditioning value.")
    noise = torch.pow(10.0, cond[:, names.index("log_noise")].float()).view(-1, 1, 1, 1)
    scale = normalization.get("scale", "noise")
    if scale == "noise":
        scale = noise * float(normalization.get("noise_factor", 1.0))
    else:
        scale = torch.full_like(noise, float(scale))
    return scale, noise


def training_loss(pred, target, valid, loss, *, x=None, scale=None, noise=None,
                  transform="asinh"):
    """
    The training loss and its parts (float32, over valid pixels).

    Parameters
    ----------
    pred : `torch.Tensor`
        Network output (B, C, H, W); channel 1 is ``log b`` when C = 2.
    target, valid : `torch.Tensor`
        (B, 1, H, W) transformed target and 0/1 validity.
    loss : `~astro_unet.training.LossConfig`
        Weights ``l1``, ``mse``, ``kl``, ``nll``.
    x : `torch.Tensor`, optional
        (B, 1, H, W) transformed network input; needed when ``loss.mse > 0``.
    scale, noise : `torch.Tensor`, optional
        (B, 1, 1, 1) normalization scale and background noise of the input
        in the model unit (electrons), from `flux_context`; needed when
        ``loss.mse > 0``.
    transform : {"asinh", "linear"}
        The normalization's transform (``mse`` undoes it).

    Returns
    -------
    total : `torch.Tensor`
        Scalar loss.
    parts : dict
        Detached scalars ``l1``, ``mse``, ``kl``, ``nll`` (0 when unused).

    Notes
    -----
    ``l1`` is the mean absolute error in the transformed space (the
    paper's loss).  Its optimum is the posterior *median*, which for a faint
    source on an empty sky lies well below the mean: it loses flux.
    ``mse`` is the squared error in linear flux, in units of each pixel's
    input noise, ``chi = (F_pred - F_target) / sqrt(noise**2 + max(F_in, 0))``
    (electrons above the background level), with a Huber tail beyond
    ``|chi| = loss.huber``.  The weight depends on the input only, so the
    optimum is the posterior *mean* of the flux: unbiased photometry.

    Examples
    --------
    >>> import torch
    >>> from astro_unet.training import LossConfig, training_loss
    >>> pred = torch.zeros(1, 1, 4, 4); target = torch.ones(1, 1, 4, 4)
    >>> total, parts = training_loss(pred, target, torch.ones(1, 1, 4, 4), LossConfig())
    >>> float(total), float(parts["l1"])
    (1.0, 1.0)
    """
    import torch

    pred = pred.float()
    mean = pred[:, :1]
    n = valid.sum().clamp_min(1.0)
    err = (mean - target).abs()
    l1 = (err * valid).sum() / n
    zero = torch.zeros((), device=pred.device)
    total = loss.l1 * l1 if loss.l1 else zero.clone()
    kl = nll = mse = zero
    if loss.mse:
        if x is None or scale is None or noise is None:
            raise ValueError("loss.mse > 0 needs x, scale and noise.")
        if transform == "asinh":
            # clamped: sinh(20) ~ 2.4e8 noise-scales stays finite in float32
            to_linear = lambda y: torch.sinh(y.float().clamp(-20.0, 20.0))  # noqa: E731
        elif transform == "linear":
            to_linear = lambda y: y.float()  # noqa: E731
        else:
            raise ValueError(f"loss.mse needs an 'asinh' or 'linear' transform, got "
                             f"{transform!r}.")
        f_in = to_linear(x) * scale                      # electrons above the level
        var = noise ** 2 + f_in.clamp_min(0.0)
        chi = (to_linear(mean) - to_linear(target)) * scale / var.sqrt()
        a = chi.abs()
        h = float(loss.huber)
        rho = torch.where(a <= h, 0.5 * chi ** 2, h * (a - 0.5 * h))
        mse = (rho * valid).sum() / n
        total = total + loss.mse * mse
    if loss.kl:
        # pixel distributions: W1 between sorted values (invalid pixels take the target's)
        p = torch.where(valid > 0, mean, target).flatten(1)
        t = target.flatten(1)
        kl = (torch.sort(p, dim=1).values - torch.sort(t, dim=1).values).abs().mean()
        total = total + loss.kl * kl
    if loss.nll and pred.shape[1] > 1:
        logb = pred[:, 1:2].clamp(-20.0, 20.0)
        nll = ((err.detach() * torch.exp(-logb) + logb) * valid).sum() / n
        total = total + loss.nll * nll
    return total, {"l1": l1.detach(), "mse": mse.detach(), "kl": kl.detach(),
                   "nll": nll.detach()}


def _loss_inputs(x, cond, config):
    """The keyword arguments `training_loss` needs beyond the batch for ``config``."""
    if not config.loss.mse:
        return {}
    norm = config.normalization
    scale, noise = flux_context(cond, normalization=norm, cond_names=config.model.cond_names)
    return {"x": x, "scale": scale, "noise": noise, "transform": norm["transform"]}


# ---------------------------------------------------------------------------
# distributed set-up and devices


class _Dist:
    """Rank, world size and local rank (from torchrun's environment)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.owned = False
        self.backend = None

    def init(self, device):
        import torch.distributed as dist

        if not self.enabled:
            return
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=self.backend)
            self.owned = True

    def barrier(self):
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def any_flag(self, flag, device):
        """True on every rank if ``flag`` is True on any."""
        if not self.enabled:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather(self, obj):
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self):
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()


def _select_device(name, dist):
    import torch

    name = name.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"run.device={name!r} but CUDA is not available "
                               f"(torch {torch.__version__}).")
        if name == "cuda":
            index = dist.local_rank if dist.enabled else torch.cuda.current_device()
        else:
            index = int(name.split(":")[1])
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


# ---------------------------------------------------------------------------
# data


def _real_dataset(config, splits, *, size, seed):
    """A RealImageDataset of ``splits`` (None when no real data is used)."""
    from .data import RealImageDataset, default_data_dir, read_exposure_table

    d = config.data
    table = read_exposure_table(d.exposure_table or None)
    data_dir = default_data_dir(d.data_dir or None)
    with warnings.catch_warnings():
        # non-standard header cards of old ground-based files are not our concern here
        warnings.simplefilter("ignore")
        from astropy import log

        with log.log_to_list():
            return RealImageDataset(data_dir, table=table, split=splits, size=size, length=1,
                                    seed=seed, augment=False,
                                    max_bad_fraction=d.max_bad_fraction)


def _measured_pairs(config):
    """The `MeasuredPairs` of the configuration (None when it uses none)."""
    from .data import default_data_dir, load_training_image, read_exposure_table
    from .measured import MeasuredPairs, pair_table_pairs, repeated_exposure_pairs

    d = config.data
    if not d.measured_fraction > 0:
        return None
    data_dir = default_data_dir(d.data_dir or None)
    pairs = []
    if d.repeated_exposures:
        table = read_exposure_table(d.exposure_table or None)
        paths = [str(p) for p in table["path"]]
        for group in d.repeated_exposures:
            frames, masks, rows = [], [], []
            for path in group:
                if path not in paths:
                    raise ValueError(f"data.repeated_exposures: {path!r} is not in the "
                                     "exposure table.")
                row = table[paths.index(path)]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ccd = load_training_image(row, data_dir)
                frames.append(np.asarray(ccd.data, dtype=np.float64))
                masks.append(np.zeros(ccd.shape, bool) if ccd.mask is None
                             else np.asarray(ccd.mask, bool))
                rows.append(row)
            times = {float(r["exposure_time"]) for r in rows}
            if len(times) != 1:
                raise ValueError(f"data.repeated_exposures: the frames of {list(group)} have "
                                 f"different exposure times {sorted(times)}.")
            pairs += repeated_exposure_pairs(
                frames, masks=masks, exptime=times.pop(),
                read_noise=float(rows[0]["read_noise"]), rows=d.repeated_rows or None,
                source=f"repeated:{group[0]}")
    if d.pair_table:
        pairs += pair_table_pairs(d.pair_table, data_dir=data_dir)
    return MeasuredPairs(pairs)


def _data_files(config, real):
    """The real files used, with split (or use) and sha256 (for the training record)."""
    from .data import default_data_dir

    files = []
    for row in (real.rows if real is not None else ()):
        path = os.path.join(str(real.data_dir), str(row["path"]))
        files.append({"path": str(row["path"]), "split": str(row["split"]),
                      "exposure_time": float(row["exposure_time"]),
                      "sha256": sha256_file(path) if os.path.isfile(path) else None})
    d = config.data
    if d.measured_fraction > 0:
        data_dir = str(default_data_dir(d.data_dir or None))
        rows = list(d.repeated_rows) or "all"
        for group in d.repeated_exposures:
            for name in group:
                path = os.path.join(data_dir, name)
                files.append({"path": name, "split": f"repeated exposures (rows {rows})",
                              "sha256": sha256_file(path) if os.path.isfile(path) else None})
        if d.pair_table:
            files.append({"path": d.pair_table, "split": "pair table",
                          "sha256": sha256_file(d.pair_table)
                          if os.path.isfile(d.pair_table) else None})
    return files


def _build_pool(config, *, seed, n, size, cache, dist, workers=1):
    from .pairs import SyntheticScenePool

    d = config.data
    kwargs = dict(size=size, instruments=d.instruments, empty_fraction=d.empty_scene_fraction,
                  seed=seed, cache=cache, workers=workers)
    if dist.enabled and cache is not None:
        # rank 0 renders and writes the cache, the others read it
        if dist.rank == 0:
            pool = SyntheticScenePool(n, **kwargs)
            dist.barrier()
        else:
            dist.barrier()
            pool = SyntheticScenePool(n, **kwargs)
        return pool
    return SyntheticScenePool(n, **kwargs)


class _StepBatches:
    """Batch sampler: for each step, this rank's share of the global batch indices."""

    def __init__(self, start, stop, batch, rank, world):
        self.start, self.stop = int(start), int(stop)
        self.batch, self.rank, self.world = int(batch), int(rank), int(world)
        self.local = self.batch // self.world

    def __iter__(self):
        for step in range(self.start, self.stop):
            base = step * self.batch + self.rank * self.local
            yield list(range(base, base + self.local))

    def __len__(self):
        return max(self.stop - self.start, 0)


def _worker_init(_):
    import torch

    torch.set_num_threads(1)


# ---------------------------------------------------------------------------
# validation


def _noisy_long(long_expect, *, sky_e, ron, rng):
    """A noisy long exposure of ``long_expect`` electrons (sky ``sky_e`` subtracted)."""
    lam = np.clip(long_expect + sky_e, 0.0, None)
    return rng.poisson(lam).astype(np.float64) - sky_e + rng.normal(0.0, ron, lam.shape)


class _Validator:
    """Fixed validation cases and their scoring (see the Notes of `train`)."""

    def __init__(self, config, *, norm, cond_names, device, run_dir, dist, real_val):
        import torch
        from astropy.nddata import CCDData

        from .pairs import PairDataset, draw_exposure, real_pair, synthetic_pair

        self.config = config
        self.norm = dict(norm)
        self.device = device
        v = config.validation
        seed = config.run.seed
        self.cases = []
        self.blank = []
        self.pool = None
        use_synthetic = config.data.synthetic_fraction > 0
        insts = sorted(k for k, w in config.data.instruments.items() if w > 0)
        if use_synthetic and v.synthetic_scenes > 0:
            size = max(v.synthetic_size, config.data.crop_size)
            cache = os.path.join(run_dir, "validation_pool.npz") if run_dir else None
            self.pool = _build_pool(config, seed=seed + _VAL_POOL, n=v.synthetic_scenes,
                                    size=size, cache=cache, dist=_NoDist())
            # validation scenes are never blank: blank frames are separate
            for j, truth in enumerate(self.pool.scenes):
                inst = self.pool.instruments[j]
                crng = np.random.default_rng([seed, _VAL_COND, j])
                c = draw_exposure(inst, crng, config.data)
                truth = truth.astype(np.float64)
                if not c["sky_subtracted"]:
                    truth = truth + c["sky_rate"]
                sky_e = c["sky_rate"] * c["t_long"] if c["sky_subtracted"] else 0.0
                long_expect = truth * c["t_long"]
                ref = _noisy_long(long_expect, sky_e=sky_e, ron=c["read_noise"],
                                  rng=np.random.default_rng([seed, _VAL_LONG, j]))
                ref_ccd = CCDData(ref, unit="electron", meta={"EXPTIME": c["t_long"]})
                for k, r in enumerate(v.ratios):
                    p = synthetic_pair(truth, ratio=r, t_long=c["t_long"],
                                       sky_rate=c["sky_rate"] if c["sky_subtracted"] else 0.0,
                                       sky_subtracted=True, read_noise=c["read_noise"],
                                       dark_current=c["dark_current"],
                                       rng=np.random.default_rng([seed, _VAL_NOISE, j, k]),
                                       source=f"synthetic:{inst}")
                    self.cases.append((f"synthetic{j}:{inst}", r, p, ref_ccd))
        if v.blank_scenes > 0:
            size = max(v.synthetic_size, config.data.crop_size)
            for j in range(v.blank_scenes):
                inst = insts[j % len(insts)] if insts else "wfc3_uvis"
                c = draw_exposure(inst, np.random.default_rng([seed, _VAL_COND, 1000 + j]),
                                  config.data)
                sky_e = c["sky_rate"] * c["t_long"]
                zeros = np.zeros((size, size))
                ref = _noisy_long(zeros, sky_e=sky_e, ron=c["read_noise"],
                                  rng=np.random.default_rng([seed, _VAL_LONG, 1000 + j]))
                ref_ccd = CCDData(ref, unit="electron", meta={"EXPTIME": c["t_long"]})
                r = max(v.ratios)
                p = synthetic_pair(zeros, ratio=r, t_long=c["t_long"], sky_rate=c["sky_rate"],
                                   sky_subtracted=True, read_noise=c["read_noise"],
                                   dark_current=c["dark_current"],
                                   rng=np.random.default_rng([seed, _VAL_NOISE, 1000 + j]),
                                   source=f"blank:{inst}")
                self.blank.append((f"blank{j}:{inst}", r, p, ref_ccd))
        self.real_files = []
        if real_val is not None:
            for i, row in enumerate(real_val.rows):
                ccd = real_val.images[i]
                ccd = _centre_crop(ccd, v.max_size)
                mask = np.asarray(ccd.mask, dtype=bool) if ccd.mask is not None else None
                self.real_files.append(str(row["path"]))
                ref_ccd = CCDData(np.asarray(ccd.data, dtype=np.float64), unit="electron",
                                  mask=mask, meta={"EXPTIME": float(row["exposure_time"])})
                from .pairs import real_dark_current

                for k, r in enumerate(v.ratios):
                    p = real_pair(ccd.data, mask=mask, exptime=float(row["exposure_time"]),
                                  ratio=r, read_noise=float(row["read_noise"]),
                                  dark_current=real_dark_current(str(row["path"])),
                                  sky_level=float(row["sky_level"]),
                                  sky_subtracted=bool(row["sky_subtracted"]),
                                  rng=np.random.default_rng([seed, _VAL_REAL, i, k]),
                                  source=f"real:{row['path']}")
                    self.cases.append((f"real:{row['path']}", r, p, ref_ccd))
        # fixed batches for the validation L1 loss (epoch 1: never a training item)
        self.l1_batches = []
        if v.l1_batches > 0 and (self.pool is not None or real_val is not None):
            data = copy.deepcopy(config.data)
            data.measured_fraction = 0.0       # validation: simulated pairs only
            if self.pool is None:
                data.synthetic_fraction = 0.0
            elif real_val is None:
                data.synthetic_fraction = 1.0
            ds = PairDataset(norm=norm, cond_names=cond_names, data=data, pool=self.pool,
                             real=real_val, seed=seed)
            ds.set_epoch(1)
            b = config.optim.batch_size
            for k in range(v.l1_batches):
                items = [ds[k * b + i] for i in range(b)]
                self.l1_batches.append(tuple(torch.stack(t) for t in zip(*items)))

    def _score(self, reference, test):
        from ..photometry import photometric_comparison

        v = self.config.validation
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                _, s = photometric_comparison(
                    reference, test, threshold=v.threshold,
                    detection_threshold=v.detection_threshold, min_area=v.min_area,
                    aperture_radius=v.aperture_radius)
            except (ValueError, RuntimeError) as err:  # e.g. no usable background
                return {"error": str(err)}
        return {k: (float(s[k]) if s.get(k) is not None else float("nan"))
                for k in ("f_measure", "tpr", "precision", "rfe_mean", "n_reference",
                          "n_test", "n_matched")}

    @staticmethod
    def _ccd(pair, data=None, *, long=False):
        from astropy.nddata import CCDData

        values = pair.input if data is None else data
        mask = pair.mask if pair.mask.any() else None
        t = pair.exptime * pair.ratio if long else pair.exptime
        return CCDData(np.asarray(values, dtype=np.float64), unit="electron", mask=mask,
                       meta={"EXPTIME": t})

    def baseline(self):
        """Metrics of the noisy inputs (scaled to the long exposure)."""
        out = {"cases": []}
        for name, r, p, ref in self.cases + self.blank:
            s = self._score(ref, self._ccd(p, p.input * p.ratio, long=True))
            out["cases"].append({"image": name, "ratio": r, **s})
        out.update(self._aggregate(out["cases"]))
        return out

    def _aggregate(self, cases):
        agg = {}
        scored = [c for c in cases if not c["image"].startswith("blank") and "error" not in c]
        for key, col in (("f_measure", "val_f_measure"), ("tpr", "val_tpr"),
                         ("precision", "val_precision"), ("rfe_mean", "val_rfe")):
            vals = [c[key] for c in scored if np.isfinite(c.get(key, np.nan))]
            agg[col] = float(np.mean(vals)) if vals else float("nan")
        for r in self.config.validation.ratios:
            vals = [c["f_measure"] for c in scored if c["ratio"] == r
                    and np.isfinite(c.get("f_measure", np.nan))]
            agg[f"val_f_r{r:g}"] = float(np.mean(vals)) if vals else float("nan")
        blank = [c.get("n_test", np.nan) for c in cases if c["image"].startswith("blank")]
        agg["val_blank_detections"] = float(np.sum(blank)) if blank else float("nan")
        return agg

    def run(self, net, step):
        import torch

        from ..denoise import denoise_ccd

        v = self.config.validation
        was_training = net.training
        net.eval()
        result = {}
        try:
            if self.l1_batches:
                total, total_mse, count = 0.0, 0.0, 0
                with torch.no_grad():
                    for x, cond, target, valid in self.l1_batches:
                        x, cond = x.to(self.device), cond.to(self.device)
                        target, valid = target.to(self.device), valid.to(self.device)
                        pred = net(x, cond)
                        _, parts = training_loss(pred, target, valid, self.config.loss,
                                                 **_loss_inputs(x, cond, self.config))
                        total += float(parts["l1"])
                        total_mse += float(parts["mse"])
                        count += 1
                result["val_l1"] = total / count
                if self.config.loss.mse:
                    result["val_mse"] = total_mse / count
            info = {"normalization": self.norm, "metadata": {"name": "training"},
                    "name": f"training-step-{step}"}
            cases = []
            for name, r, p, ref in self.cases + self.blank:
                out = denoise_ccd(self._ccd(p), ratio=r, model=(net, info), device=self.device,
                                  read_noise=p.read_noise, overlap=v.overlap or None)
                s = self._score(ref, out)
                cases.append({"image": name, "ratio": r, **s})
            result.update(self._aggregate(cases))
            result["cases"] = cases
        finally:
            net.train(was_training)
        return result


class _NoDist:
    enabled = False
    rank = 0


def _centre_crop(ccd, size):
    ny, nx = ccd.shape
    if ny <= size and nx <= size:
        return ccd
    y0 = max((ny - size) // 2, 0)
    x0 = max((nx - size) // 2, 0)
    return ccd[y0:y0 + min(size, ny), x0:x0 + min(size, nx)]


# ---------------------------------------------------------------------------
# logs


class _CSVLog:
    def __init__(self, path, columns, start_step):
        self.path = path
        self.columns = list(columns)
        rows = []
        if start_step > 0 and os.path.isfile(path):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames == self.columns:
                    rows = [r for r in reader if r["step"] and int(r["step"]) <= start_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row):
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writerow({k: _fmt(row.get(k)) for k in self.columns})


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


# ---------------------------------------------------------------------------
# checkpoints


def _rng_state(device):
    import torch

    np_state = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"name": np_state[0], "key": torch.from_numpy(np_state[1].astype(np.int64)),
                       "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                       "cached_gaussian": float(np_state[4])},
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state, device):
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _resolve_resume(resume, run_dir):
    if resume is None or resume is False:
        return None
    if resume is True or resume == "auto":
        path = os.path.join(run_dir, "last.pt")
        return path if os.path.isfile(path) else None
    path = os.fspath(resume)
    if os.path.isdir(path):
        path = os.path.join(path, "last.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist.")
    return path


# ---------------------------------------------------------------------------
# the record


def _machine(device, dist):
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "numpy": np.__version__, "device": str(device), "world_size": dist.world}
    try:
        import galsim

        info["galsim"] = galsim.__version__
    except ImportError:
        info["galsim"] = None
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = platform.processor() or platform.machine()
        info["num_threads"] = torch.get_num_threads()
    return info


def _ratios_record(config):
    d = config.data
    paper = [float(r) for r in d.paper_ratios]
    cont = [float(d.ratio_range[0]), float(d.ratio_range[1])]
    if d.ratio_schedule == "paper":
        return {"schedule": "paper", "values": paper}
    if d.ratio_schedule == "continuous":
        return {"schedule": "continuous", "range": cont}
    return {"schedule": "mixed", "values": paper, "range": cont}


def _instruments_record(config, files):
    out = []
    if config.data.synthetic_fraction > 0:
        out += [f"synthetic:{k}" for k, w in sorted(config.data.instruments.items()) if w > 0]
    if config.data.synthetic_fraction < 1:
        out += sorted({f"real:{f['path'].split('/')[0]}" for f in files})
    return out


def _version():
    try:
        from .. import __version__
    except ImportError:  # pragma: no cover
        return "unknown"
    return __version__


# ---------------------------------------------------------------------------
# train


def train(config, *, resume=None, output=None, progress=True, stop_at_step=None):
    """
    Train an Astro U-net and export it.

    Parameters
    ----------
    config : `~astro_unet.training.TrainingConfig`, str, path-like or dict
        The configuration (a file, a shipped name such as ``"smoke"``, or a
        dict: passed to `~astro_unet.training.load_config`).
    resume : str, path-like or bool, optional
        A checkpoint file or run directory to continue from; ``True`` or
        ``"auto"``: the run directory's ``last.pt`` if it exists.
    output : str or path-like, optional
        The model file to write (default: the configuration's
        ``run.output``, else ``<run_dir>/<name>.pt``).
    progress : bool, optional
        Show a progress bar (rank 0).
    stop_at_step : int, optional
        Stop after this step (checkpoint and export as at the end) although
        the schedule runs to ``optim.steps``, as a time limit would.

    Returns
    -------
    path : str
        The exported model file (on every rank).

    Raises
    ------
    ConfigError
        Invalid configuration.
    FloatingPointError
        The loss became NaN or infinite.

    Notes
    -----
    1. Pairs (`~astro_unet.training.PairDataset`): synthetic scenes rendered once into a
       pool (cached in the run directory) and real images of the exposure table's training
       splits, degraded on the fly with `~astro_unet.simulate_short_exposure` and mapped
       into the network's space by the private functions `~astro_unet.denoise_ccd` uses.
       Sample ``i`` of step ``s`` has the global index ``s * batch_size + i`` and depends
       only on the seed and that index, so a run is reproducible, can be resumed exactly and
       does not depend on the number of processes or loader workers.
    2. Optimisation: AdamW, linear warm-up then cosine decay, gradient clipping; loss =
       ``l1`` x mean absolute error over valid pixels (the paper's loss) + ``mse`` x the
       noise-normalised squared error in linear flux (unbiased: see `training_loss`) +
       ``kl`` x a pixel-distribution term (the 1-D Wasserstein distance of the sorted pixel
       values of output and target, a differentiable, histogram-free stand-in for the
       paper's KL divergence of pixel histograms) + ``nll`` x the Laplace negative
       log-likelihood of the uncertainty channel of a two-channel network (the error is
       detached, so the head learns ``b = E|error|`` without pulling the image).
    3. Validation (every ``validation.every`` steps and at the end, rank 0): the L1 loss on
       fixed validation batches, and the photometry that matters: validation scenes
       (synthetic: a noisy long exposure of a noiseless scene; real: the table's validation
       images) are degraded at each validation ratio with fixed seeds, denoised with
       `~astro_unet.denoise_ccd` (exactly as users will) and compared with the long exposure
       by `~astro_unet.photometric_comparison`, every image thresholded at the long
       exposure's absolute level: F-measure, TPR, precision, relative flux error, and the
       detections in denoised blank frames (hallucinations).  The metrics of the noisy
       inputs are written once to ``validation_baseline.json``.
    4. Logs: ``log.csv`` in the run directory (step, learning rate, losses, gradient norm,
       throughput, wall time, validation metrics) and a tqdm progress bar when tqdm is
       installed.
    5. Checkpoints (``checkpoint-<step>.pt`` and ``last.pt``): model, optimizer, scheduler,
       step, RNG states (python, numpy, torch), the configuration, the best validation so
       far and the wall time used.  Resuming from one gives the same parameters as an
       uninterrupted run.
    6. Export: `~astro_unet.model.save_model` with the configuration's normalization and
       metadata ``name``, ``description``, ``version``, ``created``, ``instruments``,
       ``ratios``, ``units`` and ``training`` (command line, configuration, data files with
       their splits and sha256, the synthetic pool, seed, steps, wall time, machine); the
       same record in ``<model>.json``.

    Devices: CPU, or CUDA with bfloat16 autocast and channels-last memory.  Under
    ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment) the model is
    wrapped in `~torch.nn.parallel.DistributedDataParallel` (NCCL on CUDA, Gloo on the CPU),
    the global batch is split evenly over the processes, and only rank 0 writes logs,
    checkpoints and the model.

    Examples
    --------
    A few steps of the tiny ``smoke`` configuration (needs GalSim):

    >>> import tempfile
    >>> from astro_unet.training import load_config, train
    >>> from astro_unet.model import load_model_file
    >>> cfg = load_config("smoke", overrides={"run.run_dir": tempfile.mkdtemp(),
    ...                                       "optim.steps": 2, "validation.blank_scenes": 0})
    >>> path = train(cfg, progress=False)  # doctest: +IGNORE_OUTPUT
    >>> net, info = load_model_file(path)
    >>> info["metadata"]["training"]["steps"]
    2
    """
    import torch

    if not isinstance(config, TrainingConfig):
        config = load_config(config)
    dist = _Dist()
    device = _select_device(config.run.device, dist)
    dist.init(device)
    fork_devices = [device.index] if device.type == "cuda" else []
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        with torch.random.fork_rng(devices=fork_devices):
            return _train(config, dist, device, resume=resume, output=output,
                          progress=progress, stop_at_step=stop_at_step)
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_det_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn
        dist.close()


def _train(config, dist, device, *, resume, output, progress, stop_at_step):
    """The body of `train`, one section after the other (see `_Run`)."""
    run = _Run(config, dist, device, output=output, stop_at_step=stop_at_step)
    run.set_up_model(resume)
    run.set_up_data()
    run.set_up_validation(progress)
    run.optimise()
    run.validate_last()
    return run.export()


class _Run:
    """
    One training run, in the sections of `train`.

    The constructor prepares torch and the run directory; then, in this
    order, `set_up_model` (model, optimizer, schedule; resume or warm
    start), `set_up_data` (the pairs and their loader), `set_up_validation`
    (validation cases, baseline, logs, progress bar), `optimise` (the loop,
    with logs, validations and checkpoints), `validate_last` and `export`.
    """

    def __init__(self, config, dist, device, *, output, stop_at_step):
        import torch

        self.t_start = time.time()
        self.config = config
        self.dist = dist
        self.device = device
        self.rank0 = dist.rank == 0
        self.run_dir = config.run_dir
        self.output = os.fspath(output) if output is not None else config.output_path
        self.stop_at_step = stop_at_step
        run = config.run
        if run.num_threads:
            torch.set_num_threads(run.num_threads)
        if run.deterministic:
            if device.type == "cpu":
                torch.use_deterministic_algorithms(True)
            else:
                torch.backends.cudnn.deterministic = True
                torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        batch_size = config.optim.batch_size
        if batch_size % dist.world:
            raise ValueError(f"optim.batch_size ({batch_size}) must be a multiple of the "
                             f"number of processes ({dist.world}).")
        if self.rank0:
            os.makedirs(self.run_dir, exist_ok=True)
        dist.barrier()

    # -- model, optimizer, schedule (initialisation from the seed); resume

    def set_up_model(self, resume):
        """The model, optimizer and schedule: new, resumed from a checkpoint or warm-started."""
        import torch

        from ..model import AstroUNet

        config, device, dist = self.config, self.device, self.dist
        run, cfg_o = config.run, config.optim
        torch.manual_seed(run.seed)
        model = AstroUNet(config.model).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg_o.lr, betas=cfg_o.betas,
                                      weight_decay=cfg_o.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: _lr_factor(s, cfg_o))

        self.start_step, self.wall_before, self.best = 0, 0.0, None
        ckpt_path = _resolve_resume(resume, self.run_dir)
        if ckpt_path is not None:
            # on the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            saved_model = ckpt["config"]["model"]
            if saved_model != config.model.to_dict():
                raise ValueError(f"checkpoint {ckpt_path!r} holds another architecture "
                                 f"({saved_model}) than the configuration ({config.model}).")
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            self.start_step = int(ckpt["step"])
            self.wall_before = float(ckpt.get("wall_time", 0.0))
            self.best = ckpt.get("best")
            _set_rng_state(ckpt["rng"], device)
            if ckpt["config"] != config.to_dict():
                message(f"resuming from {ckpt_path} with a changed configuration", dist.rank)
            message(f"resumed from {ckpt_path} at step {self.start_step}", dist.rank)
        elif run.init:
            _warm_start(model, run.init, config)
            message(f"warm start from {run.init}", dist.rank)
        self.total_steps = cfg_o.steps
        self.last_step = (self.total_steps if self.stop_at_step is None
                          else min(int(self.stop_at_step), self.total_steps))

        net = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if run.compile:
            net = torch.compile(net)
        self.model, self.net = model, net
        self.optimizer, self.scheduler = optimizer, scheduler

    # -- data

    def set_up_data(self):
        """The training pairs (real images, synthetic pool) and this rank's loader."""
        import torch
        from torch.utils.data import DataLoader

        from .pairs import PairDataset

        config, device, dist = self.config, self.device, self.dist
        run, d = config.run, config.data
        self.real = None
        if d.synthetic_fraction < 1:
            self.real = _real_dataset(config, d.train_splits, size=d.crop_size, seed=run.seed)
        self.pool = None
        if d.synthetic_fraction > 0:
            t0 = time.time()
            self.pool = _build_pool(config, seed=run.seed, n=d.pool_size, size=d.scene_size,
                                    cache=os.path.join(self.run_dir, "scene_pool.npz"),
                                    dist=dist,
                                    workers=max(1, min(d.num_workers, os.cpu_count() or 1)))
            message(f"synthetic pool: {len(self.pool)} scenes of {d.scene_size} px "
                    f"({time.time() - t0:.1f} s)", dist.rank)
        self.measured = _measured_pairs(config)
        if self.measured is not None:
            sources = sorted({p.source.rsplit(":", 1)[0] for p in self.measured.pairs})
            message(f"measured pairs: {len(self.measured)} ({', '.join(sources)}), "
                    f"{d.measured_fraction:.0%} of the training pairs", dist.rank)
        self.norm = dict(config.normalization)
        dataset = PairDataset(norm=self.norm, cond_names=config.model.cond_names, data=d,
                              pool=self.pool, real=self.real, measured=self.measured,
                              seed=run.seed)
        # fail early, with a clear message, on a normalization denoise_ccd would refuse
        try:
            dataset.arrays(0)
        except ValueError as err:
            raise ValueError(f"the configuration's normalization or conditioning is not "
                             f"usable: {err}") from err
        sampler = _StepBatches(self.start_step, self.last_step, config.optim.batch_size,
                               dist.rank, dist.world)
        self.loader = DataLoader(dataset, batch_sampler=sampler, num_workers=d.num_workers,
                                 pin_memory=device.type == "cuda", worker_init_fn=_worker_init,
                                 generator=torch.Generator().manual_seed(run.seed),
                                 persistent_workers=False,
                                 prefetch_factor=4 if d.num_workers else None)

    # -- validation (rank 0), logs and progress bar

    def set_up_validation(self, progress):
        """The validation cases and the noisy inputs' baseline, ``log.csv`` and the bar."""
        config, dist, run_dir = self.config, self.dist, self.run_dir
        d, v = config.data, config.validation
        self.validator = None
        self.csv_log = None
        self.val_estimate = 0.0
        self.columns = list(CSV_COLUMNS) + [f"val_f_r{r:g}" for r in v.ratios]
        if self.rank0:
            real_val = None
            if v.real and d.validation_splits:
                try:
                    real_val = _real_dataset(config, d.validation_splits, size=16,
                                             seed=config.run.seed)
                except ValueError as err:  # no data directory or no validation image
                    if d.synthetic_fraction < 1:
                        raise
                    message(f"no real validation images ({err})")
            validator = _Validator(config, norm=self.norm, cond_names=config.model.cond_names,
                                   device=self.device, run_dir=run_dir, dist=dist,
                                   real_val=real_val)
            if not validator.cases and not validator.blank and not validator.l1_batches:
                validator = None
            elif self.start_step == 0 or not os.path.isfile(
                    os.path.join(run_dir, "validation_baseline.json")):
                t0 = time.time()
                base = validator.baseline()
                # the first estimate of a validation's duration (for the time limit)
                self.val_estimate = 3.0 * (time.time() - t0)
                with open(os.path.join(run_dir, "validation_baseline.json"), "w") as f:
                    json.dump(_plain_json(base), f, indent=1)
                message("noisy-input validation metrics: " + ", ".join(
                    f"{k}={base[k]:.3g}" for k in ("val_f_measure", "val_tpr", "val_rfe")
                    if k in base), dist.rank)
            self.validator = validator
            self.csv_log = _CSVLog(os.path.join(run_dir, "log.csv"), self.columns,
                                   self.start_step)
            if self.start_step > 0:
                self.val_estimate = max(self.val_estimate,
                                        _truncate_validations(run_dir, self.start_step))
        self.bar = ProgressBar(self.total_steps, self.start_step, progress and self.rank0)

    # -- checkpoints and validations during the run

    def checkpoint(self, step):
        """Write ``last.pt`` (and ``checkpoint-<step>.pt``, keeping the newest) on rank 0."""
        if not self.rank0:
            return
        config, run_dir = self.config, self.run_dir
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "step": step,
                 "rng": _rng_state(self.device), "config": config.to_dict(),
                 "wall_time": self.wall_before + time.time() - self.t_start, "best": self.best}
        path = os.path.join(run_dir, f"checkpoint-{step:08d}.pt")
        _atomic_torch_save(state, os.path.join(run_dir, "last.pt"))
        if config.checkpoint.keep > 0:
            _atomic_torch_save(state, path)
            olds = sorted(p for p in os.listdir(run_dir)
                          if p.startswith("checkpoint-") and p.endswith(".pt"))
            for old in olds[:-config.checkpoint.keep]:
                os.unlink(os.path.join(run_dir, old))

    def validate(self, step):
        """Validate the model at ``step``: keep the best, append to ``validation.jsonl``."""
        t0 = time.time()
        res = self.validator.run(self.model, step)
        res["val_seconds"] = time.time() - t0
        f = res.get("val_f_measure", float("nan"))
        if np.isfinite(f) and (self.best is None or f > self.best["f_measure"]):
            self.best = {"step": step, "f_measure": float(f),
                         "state": {k: t.detach().cpu().clone()
                                   for k, t in self.model.state_dict().items()}}
        with open(os.path.join(self.run_dir, "validation.jsonl"), "a") as fh:
            fh.write(json.dumps(_plain_json({"step": step, **res})) + "\n")
        return res

    # -- the loop

    def optimise(self):
        """The optimisation steps, with logs, validations, checkpoints and the time limit."""
        import torch

        config, device, dist = self.config, self.device, self.dist
        run, cfg_o, v = config.run, config.optim, config.validation
        net, optimizer, scheduler = self.net, self.optimizer, self.scheduler
        validator, bar, columns = self.validator, self.bar, self.columns
        t_start, wall_before, last_step = self.t_start, self.wall_before, self.last_step
        limit_s = run.time_limit_minutes * 60.0
        names = ("loss", "l1", "mse", "kl", "nll", "grad_norm")

        acc = torch.zeros(len(names), device=device)   # summed on the device: no sync per step
        n_acc, t_last, step_times = 0, time.time(), []
        val_seconds = self.val_estimate
        self.step = self.start_step
        self.stopped_early = False
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                    if device.type == "cuda" and run.amp else contextlib.nullcontext())
        net.train()
        t_prev = time.time()
        try:
            for x, cond, target, valid in self.loader:
                x = x.to(device, non_blocking=True)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                cond = cond.to(device, non_blocking=True)
                target = target.to(device, non_blocking=True)
                valid = valid.to(device, non_blocking=True)
                with autocast:
                    pred = net(x, cond)
                loss, parts = training_loss(pred, target, valid, config.loss,
                                            **_loss_inputs(x, cond, config))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg_o.grad_clip > 0:
                    gn = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg_o.grad_clip)
                else:
                    gn = torch.zeros((), device=device)
                optimizer.step()
                scheduler.step()
                self.step += 1
                step = self.step
                acc += torch.stack([loss.detach(), parts["l1"], parts["mse"], parts["kl"],
                                    parts["nll"], gn.detach().float()])
                n_acc += 1

                do_val = validator is not None and v.every and step % v.every == 0
                do_ckpt = config.checkpoint.every and step % config.checkpoint.every == 0
                do_log = (step % run.log_every == 0 or do_val or do_ckpt or step == last_step)
                if do_log:
                    means = (acc / max(n_acc, 1)).tolist()
                    if not math.isfinite(means[0]):
                        raise FloatingPointError(
                            f"the training loss became {means[0]} between steps "
                            f"{step - n_acc + 1} and {step} (lower optim.lr or set "
                            "optim.grad_clip).")
                if do_log and self.rank0:
                    now = time.time()
                    row = dict(zip(names, means))
                    row.update(step=step, lr=scheduler.get_last_lr()[0],
                               samples_per_s=n_acc * cfg_o.batch_size / max(now - t_last, 1e-9),
                               seconds=wall_before + now - t_start)
                    if do_val:
                        res = self.validate(step)
                        val_seconds = max(val_seconds, res["val_seconds"])
                        row.update({k: res[k] for k in res if k in columns})
                        bar.line(f"step {step}: " + ", ".join(
                            f"{k}={res[k]:.4g}" for k in ("val_l1", "val_f_measure", "val_tpr",
                                                          "val_rfe", "val_blank_detections")
                            if k in res))
                    self.csv_log.write(row)
                    bar.update(n_acc, loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.2g}")
                    if not bar.bar:
                        bar.line(f"step {step}/{self.total_steps} loss {row['loss']:.4g} "
                                 f"lr {row['lr']:.3g}")
                if do_log:
                    acc.zero_()
                    n_acc, t_last = 0, time.time()
                if do_ckpt:
                    self.checkpoint(step)
                now = time.time()
                step_times.append(now - t_prev)       # data + compute (+ logs, validation)
                t_prev = now
                if step >= last_step:
                    break
                if limit_s:
                    elapsed = now - t_start
                    per_step = float(np.median(step_times[-50:]))
                    # room for a last checkpoint, the final validation and the export
                    reserve = 15.0 + 2.0 * val_seconds + 3.0 * per_step
                    flag = elapsed + reserve >= limit_s
                    if dist.any_flag(flag, device):
                        self.stopped_early = True
                        message(f"time limit: stopping after step {step} "
                                f"({elapsed / 60:.1f} of {run.time_limit_minutes:g} min)",
                                dist.rank)
                        break
        except KeyboardInterrupt:
            message(f"interrupted at step {self.step}: writing a checkpoint", dist.rank)
            self.checkpoint(self.step)
            raise
        finally:
            bar.close()
        every = config.checkpoint.every
        if self.step > self.start_step and not (every and self.step % every == 0):
            self.checkpoint(self.step)

    # -- final validation, export

    def validate_last(self):
        """Validate the final model unless the loop just did (rank 0)."""
        v = self.config.validation
        step = self.step
        self.final_val = None
        if self.rank0 and self.validator is not None and step > self.start_step and \
                not (v.every and step % v.every == 0):
            self.final_val = self.validate(step)
            row = {"step": step, "lr": self.scheduler.get_last_lr()[0],
                   "seconds": self.wall_before + time.time() - self.t_start}
            row.update({k: self.final_val[k] for k in self.final_val if k in self.columns})
            self.csv_log.write(row)

    def export(self):
        """Export the final (or best) model with the record of the run; its path."""
        from ..model import AstroUNet, save_model

        config, dist, device = self.config, self.dist, self.device
        run, d = config.run, config.data
        step, best, output = self.step, self.best, self.output
        digests = dist.gather(state_sha256(self.model))
        if self.rank0:
            export_model = self.model
            exported = "final"
            if config.checkpoint.export == "best" and best is not None:
                export_model = AstroUNet(config.model)
                export_model.load_state_dict(best["state"])
                exported = f"best (step {best['step']}, F {best['f_measure']:.4f})"
            wall = self.wall_before + time.time() - self.t_start
            files = _data_files(config, self.real)
            table = config.data.exposure_table or "astro_unet/training/exposures.ecsv (shipped)"
            record = {
                "command": _command_line(),
                "config": config.to_dict(),
                "config_source": config.source,
                "data": {
                    "exposure_table": table,
                    "files": files,
                    "train_splits": list(d.train_splits) if self.real is not None else [],
                    "validation_files": (list(self.validator.real_files) if self.validator
                                         else []),
                    "synthetic_fraction": float(d.synthetic_fraction),
                    "synthetic_pool": (self.pool.description if self.pool is not None
                                       else None),
                },
                "seed": int(run.seed),
                "steps": int(step),
                "planned_steps": int(self.total_steps),
                "stopped_early": bool(self.stopped_early or step < self.total_steps),
                "exported": exported,
                "samples": int(step * config.optim.batch_size),
                "wall_time_s": round(wall, 1),
                "machine": _machine(device, dist),
                "distributed": {"world_size": dist.world, "backend": dist.backend,
                                "parameter_digests": digests,
                                "ranks_identical": len(set(digests)) == 1},
                "validation": _val_summary(self.final_val if self.final_val is not None else
                                           _last_validation(self.run_dir)),
                "best_validation": ({"step": best["step"], "f_measure": best["f_measure"]}
                                    if best else None),
                "astro_unet": _version(),
            }
            metadata = {
                "name": run.name,
                "description": run.description,
                "version": run.version,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "instruments": _instruments_record(config, files),
                "ratios": _ratios_record(config),
                "units": "electron (short-exposure counts; denoise_ccd converts any unit it "
                         "accepts)",
                "training": record,
            }
            metadata = _plain_json(metadata)  # plain types only, NaN -> None
            out_dir = os.path.dirname(os.path.abspath(output))
            os.makedirs(out_dir, exist_ok=True)
            norm = self.norm
            if norm.get("overlap") is None:
                # the tile overlap denoise_ccd should use, measured once here on the trained
                # network rather than at every first use of the model file
                from ..denoise import recommended_overlap

                norm = dict(norm, overlap=recommended_overlap(export_model))
            digest = save_model(export_model, output, normalization=norm, metadata=metadata)
            sidecar = os.path.splitext(output)[0] + ".json"
            with open(sidecar, "w") as f:
                json.dump({"model": os.path.basename(output), "sha256": digest,
                           "config": config.model.to_dict(), "normalization": norm,
                           "metadata": metadata}, f, indent=1)
            message(f"exported {output} (sha256 {digest[:12]}..., {step} steps, "
                    f"{wall / 60:.1f} min)")
        dist.barrier()
        return os.path.abspath(output)


def _warm_start(model, init, config):
    """Load the weights of model file or name ``init`` into ``model``.

    The architecture must be the same, except that a one-channel model may
    start a two-channel one (``model.out_channels = 2``): the image channel of
    the output convolution is copied and the new ``log b`` channel starts at
    zero weights (its bias learns the typical error first).
    """
    import torch

    from ..weights import load_model

    net, info = load_model(init)
    theirs = info["config"].to_dict()
    ours = config.model.to_dict()
    grow = (theirs.get("out_channels") == 1 and ours.get("out_channels") == 2)
    if grow:
        theirs["out_channels"] = 2
    if theirs != ours:
        raise ValueError(f"run.init {init!r} holds another architecture ({info['config']}) "
                         f"than the configuration ({config.model}).")
    state = {k: v.float() for k, v in net.state_dict().items()}
    if grow:
        own = model.state_dict()
        for key, value in list(state.items()):
            if own[key].shape != value.shape:     # the output convolution: (1, ...) -> (2, ...)
                grown = torch.zeros_like(own[key])
                grown[:1] = value
                state[key] = grown
    model.load_state_dict(state)


def _command_line():
    """The command that started this process (``python -m`` form for our entry point)."""
    argv = list(sys.argv)
    if argv and argv[0].replace(os.sep, "/").endswith("astro_unet/training/__main__.py"):
        argv = ["python", "-m", "astro_unet.training"] + argv[1:]
    if os.environ.get("WORLD_SIZE", "1") != "1":
        argv = [f"[torchrun, {os.environ['WORLD_SIZE']} processes]"] + argv
    return " ".join(shlex.quote(a) for a in argv)


def _plain_json(obj):
    """A JSON round trip with non-finite floats replaced by None."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, np.integer, np.bool_)):
            return clean(x.item())
        return x
    return json.loads(json.dumps(clean(obj), default=str))


def _truncate_validations(run_dir, step):
    """Drop validations after ``step`` (a resumed run redoes them); their longest duration."""
    path = os.path.join(run_dir, "validation.jsonl")
    if not os.path.isfile(path):
        return 0.0
    with open(path) as f:
        kept = [json.loads(line) for line in f if line.strip()]
    kept = [r for r in kept if r.get("step", 0) <= step]
    with open(path, "w") as f:
        for r in kept:
            f.write(json.dumps(r) + "\n")
    return max([float(r.get("val_seconds") or 0.0) for r in kept] or [0.0])


def _last_validation(run_dir):
    path = os.path.join(run_dir, "validation.jsonl")
    if not os.path.isfile(path):
        return None
    last = None
    with open(path) as f:
        for line in f:
            if line.strip():
                last = json.loads(line)
    return last


def _val_summary(res):
    if not res:
        return None
    return {k: v for k, v in res.items() if k != "cases"}
