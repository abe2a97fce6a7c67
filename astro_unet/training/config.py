# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Training configuration: a TOML file holding every choice of a training run.

A configuration file has one table per concern; every key is optional (the
defaults are those of `TrainingConfig`) and unknown keys are errors::

    [run]            # name, description, version, seed, device, amp, time limit, output
    [model]          # the fields of astro_unet.model.UNetConfig
    [normalization]  # how pixels enter the network (see the docs: denoise_design)
    [data]           # real images, synthetic scenes, exposures, crops, ratio schedule
    [optim]          # AdamW, warm-up + cosine schedule, steps, batch size, clipping
    [loss]           # weights of the L1, pixel-distribution and Laplace NLL terms
    [validation]     # photometric validation during training
    [checkpoint]     # checkpoint interval, how many to keep, what to export

Three configurations ship with the package (``configs/`` next to this
module): ``default`` (the package's default model), ``paper`` (the network of
Vojtekova et al. 2021 with its ratio schedule) and ``smoke`` (a tiny run for
tests and documentation).  `load_config` accepts these names as well as file
paths.

No module here imports `torch`.
"""

import copy
import dataclasses
import math
import os
import tomllib
from importlib import resources

__all__ = [
    "ConfigError",
    "RunConfig",
    "DataConfig",
    "OptimConfig",
    "LossConfig",
    "ValidationConfig",
    "CheckpointConfig",
    "TrainingConfig",
    "load_config",
    "builtin_configs",
    "RATIO_SCHEDULES",
]

#: Ratio schedules known to the pair generator.
RATIO_SCHEDULES = ("paper", "continuous", "mixed")

_INSTRUMENTS = ("wfc3_uvis", "acs_wfc", "ground")


class ConfigError(ValueError):
    """
    A training configuration is invalid (unknown key, wrong type or value).

    Examples
    --------
    >>> from astro_unet.training import ConfigError, load_config
    >>> try:
    ...     load_config({"optim": {"learning_rate": 1e-3}})
    ... except ConfigError as err:
    ...     print(str(err).split(" (")[0])
    unknown key 'optim.learning_rate' in the configuration
    """


def _range(value, name, *, positive=True):
    """A (low, high) pair of floats."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{name} must be a [low, high] pair, got {value!r}.")
    lo, hi = (_number(v, name) for v in value)
    if lo > hi or (positive and lo <= 0):
        raise ConfigError(
            f"{name} must be a [low, high] pair with {'0 < ' if positive else ''}low <= high, "
            f"got {value!r}.")
    return (lo, hi)


def _number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


@dataclasses.dataclass
class RunConfig:
    """
    ``[run]``: identity of the run, randomness, device and limits.

    Attributes
    ----------
    name : str
        Model name (metadata ``name``; default run directory ``runs/<name>``).
    description : str
        Free text stored in the model file.
    version : str
        Model version stored in the model file.
    seed : int
        Seed of everything random (initialisation, data, noise).
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    amp : bool
        bfloat16 autocast on CUDA (ignored on the CPU).
    compile : bool
        `torch.compile` the network (CUDA runs).
    deterministic : bool
        `torch.use_deterministic_algorithms` on the CPU; cuDNN in
        deterministic mode on CUDA.
    num_threads : int
        CPU threads for torch (0: torch's default).
    time_limit_minutes : float
        Wall-clock budget of the run (0: none).  Training stops in time to
        write a checkpoint and export the model.
    output : str
        Path of the exported model file ("" : ``<run_dir>/<name>.pt``).
    run_dir : str
        Directory of logs and checkpoints ("" : ``runs/<name>``).
    log_every : int
        Steps between two rows of the CSV log.
    init : str
        Warm start: a model file or registered model name
        (`astro_unet.load_model`) of the same architecture whose weights
        start the run ("" : random initialisation).  Ignored when resuming
        from a checkpoint.
    """

    name: str = "astro-unet"
    description: str = ""
    version: str = "1"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    deterministic: bool = True
    num_threads: int = 0
    time_limit_minutes: float = 0.0
    output: str = ""
    run_dir: str = ""
    log_every: int = 10
    init: str = ""

    def check(self):
        if not self.name:
            raise ConfigError("run.name must not be empty.")
        if self.num_threads < 0:
            raise ConfigError(f"run.num_threads must be >= 0, got {self.num_threads}.")
        if self.time_limit_minutes < 0:
            raise ConfigError("run.time_limit_minutes must be >= 0.")
        if self.log_every < 1:
            raise ConfigError("run.log_every must be >= 1.")
        dev = self.device.strip().lower()
        cuda_n = dev.startswith("cuda:") and dev[5:].isdigit()
        if not (dev in ("auto", "cpu", "cuda") or cuda_n):
            raise ConfigError(
                f"run.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}.")


@dataclasses.dataclass
class DataConfig:
    """
    ``[data]``: where training pairs come from.

    Attributes
    ----------
    data_dir : str
        Directory of the real images ("" : the ``ASTRO_UNET_DATA``
        environment variable; not needed when ``synthetic_fraction`` is 1).
    exposure_table : str
        ECSV exposure table ("" : the one shipped with the package).
    train_splits, validation_splits : tuple of str
        Splits of the table used for training and for validation.
    synthetic_fraction : float
        Fraction of training pairs made from synthetic scenes (0-1).
    pool_size : int
        Number of synthetic scenes rendered once at the start.
    scene_size : int
        Side of the synthetic scenes (pixels).
    empty_scene_fraction : float
        Fraction of the pool that is blank sky (no sources), so that the
        network learns not to invent stars.
    instruments : dict
        Instrument mix of the synthetic scenes (weights, normalised).
    t_long : tuple of float
        Range (s) of the long exposure time, drawn log-uniformly.
    sky : dict
        Per instrument, the range (e-/s/pixel) of the sky level, drawn
        log-uniformly.
    sky_subtracted_probability : dict
        Per instrument, the chance that the sky is subtracted from the
        image (as in drizzled HST products) rather than present.
    ground_read_noise : tuple of float
        Range (e-) of the read noise of ground-based synthetic frames (HST
        frames use `astro_unet.DETECTOR_PRESETS`).
    crop_size : int
        Side of the training crops (a multiple of the network's
        ``size_multiple``).
    ratio_schedule : str
        ``"paper"`` (each crop at every ratio of ``paper_ratios``, in
        order), ``"continuous"`` (log-uniform in ``ratio_range``) or
        ``"mixed"`` (half of the crops each way).
    paper_ratios : tuple of float
        Ratios of the paper schedule (Network 2: 2, 3, 4, 5).
    ratio_range : tuple of float
        Range of the continuous schedule.
    augment : bool
        Random flips and 90-degree rotations.
    max_bad_fraction : float
        Largest fraction of bad pixels in a real crop.
    num_workers : int
        DataLoader worker processes (0: pairs are made in the training
        process).
    measured_fraction : float
        Fraction of training pairs with real noise (`~astro_unet.training.MeasuredPairs`:
        ``repeated_exposures`` and ``pair_table``), drawn before the
        synthetic/real choice (0-1; 0 by default).
    repeated_exposures : tuple of tuple of str
        Groups of mutually aligned frames of one field (``path`` entries of
        the exposure table): each frame against the mean of the others
        (`~astro_unet.training.repeated_exposure_pairs`).
    repeated_rows : tuple of int
        ``(start, stop)``: the rows of the repeated frames used for
        training; empty: all rows.
    pair_table : str
        ECSV table of real ``(short, long)`` files
        (`~astro_unet.training.pair_table_pairs`; paths relative to
        ``data_dir``); "": none.
    """

    data_dir: str = ""
    exposure_table: str = ""
    train_splits: tuple = ("train",)
    validation_splits: tuple = ("validation",)
    synthetic_fraction: float = 0.7
    pool_size: int = 64
    scene_size: int = 256
    empty_scene_fraction: float = 0.05
    instruments: dict = dataclasses.field(
        default_factory=lambda: {"wfc3_uvis": 0.4, "acs_wfc": 0.3, "ground": 0.3})
    t_long: tuple = (60.0, 5000.0)
    sky: dict = dataclasses.field(default_factory=lambda: {
        "wfc3_uvis": (0.005, 0.5), "acs_wfc": (0.01, 0.5), "ground": (5.0, 300.0)})
    sky_subtracted_probability: dict = dataclasses.field(default_factory=lambda: {
        "wfc3_uvis": 0.5, "acs_wfc": 0.5, "ground": 0.5})
    ground_read_noise: tuple = (3.0, 10.0)
    crop_size: int = 128
    ratio_schedule: str = "mixed"
    paper_ratios: tuple = (2.0, 3.0, 4.0, 5.0)
    ratio_range: tuple = (1.5, 10.0)
    augment: bool = True
    max_bad_fraction: float = 0.1
    num_workers: int = 0
    measured_fraction: float = 0.0
    repeated_exposures: tuple = ()
    repeated_rows: tuple = ()
    pair_table: str = ""

    def check(self):
        if not 0 <= self.synthetic_fraction <= 1:
            raise ConfigError("data.synthetic_fraction must be in [0, 1].")
        if not 0 <= self.empty_scene_fraction <= 1:
            raise ConfigError("data.empty_scene_fraction must be in [0, 1].")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ConfigError("data.max_bad_fraction must be in [0, 1].")
        if self.synthetic_fraction > 0 and self.pool_size < 1:
            raise ConfigError("data.pool_size must be >= 1 when synthetic_fraction > 0.")
        for name in ("crop_size", "scene_size"):
            if getattr(self, name) < 8:
                raise ConfigError(f"data.{name} must be >= 8.")
        if self.synthetic_fraction > 0 and self.scene_size < self.crop_size:
            raise ConfigError(
                f"data.scene_size ({self.scene_size}) must be >= data.crop_size "
                f"({self.crop_size}).")
        if self.num_workers < 0:
            raise ConfigError("data.num_workers must be >= 0.")
        if self.ratio_schedule not in RATIO_SCHEDULES:
            raise ConfigError(
                f"data.ratio_schedule must be one of {RATIO_SCHEDULES}, "
                f"got {self.ratio_schedule!r}.")
        self.t_long = _range(self.t_long, "data.t_long")
        self.ratio_range = _range(self.ratio_range, "data.ratio_range")
        if self.ratio_range[0] <= 1:
            raise ConfigError("data.ratio_range must be above 1.")
        self.ground_read_noise = _range(self.ground_read_noise, "data.ground_read_noise",
                                        positive=False)
        ratios = tuple(_number(r, "data.paper_ratios") for r in self.paper_ratios)
        if not ratios or min(ratios) <= 1:
            raise ConfigError("data.paper_ratios must be ratios > 1.")
        self.paper_ratios = ratios
        if not 0 <= self.measured_fraction <= 1:
            raise ConfigError("data.measured_fraction must be in [0, 1].")
        self.repeated_exposures = tuple(
            _str_tuple(g, "data.repeated_exposures (each group)")
            for g in (self.repeated_exposures or ()))
        if any(len(g) < 2 for g in self.repeated_exposures):
            raise ConfigError("data.repeated_exposures: each group needs at least 2 frames.")
        rows = tuple(self.repeated_rows or ())
        if rows:
            if len(rows) != 2 or not all(isinstance(v, int) for v in rows) or \
                    not 0 <= rows[0] < rows[1]:
                raise ConfigError(f"data.repeated_rows must be [start, stop] with "
                                  f"0 <= start < stop, got {list(rows)}.")
        self.repeated_rows = rows
        if self.measured_fraction > 0 and not (self.repeated_exposures or self.pair_table):
            raise ConfigError("data.measured_fraction > 0 needs data.repeated_exposures or "
                              "data.pair_table.")
        self.train_splits = _str_tuple(self.train_splits, "data.train_splits")
        self.validation_splits = _str_tuple(self.validation_splits, "data.validation_splits")
        self.instruments = _instrument_dict(self.instruments, "data.instruments",
                                            lambda v, n: _number(v, n))
        if self.synthetic_fraction > 0:
            if not self.instruments or sum(self.instruments.values()) <= 0 or \
                    min(self.instruments.values()) < 0:
                raise ConfigError("data.instruments needs non-negative weights, "
                                  "at least one positive.")
        self.sky = _instrument_dict(self.sky, "data.sky",
                                    lambda v, n: _range(v, n, positive=False))
        self.sky_subtracted_probability = _instrument_dict(
            self.sky_subtracted_probability, "data.sky_subtracted_probability",
            lambda v, n: _number(v, n))
        for inst in self.instruments:
            if inst not in self.sky:
                raise ConfigError(f"data.sky has no range for instrument {inst!r}.")
            p = self.sky_subtracted_probability.setdefault(inst, 0.5)
            if not 0 <= p <= 1:
                raise ConfigError("data.sky_subtracted_probability values must be in [0, 1].")


def _str_tuple(value, name):
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a list of strings, got {value!r}.")
    return tuple(value)


def _instrument_dict(value, name, convert):
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a table (instrument = value), got {value!r}.")
    out = {}
    for key, v in value.items():
        if key not in _INSTRUMENTS:
            raise ConfigError(
                f"unknown instrument {key!r} in {name}; known: {', '.join(_INSTRUMENTS)}.")
        out[key] = convert(v, f"{name}.{key}")
    return out


@dataclasses.dataclass
class OptimConfig:
    """
    ``[optim]``: AdamW with a linear warm-up and a cosine decay.

    Attributes
    ----------
    lr : float
        Peak learning rate.
    weight_decay : float
        AdamW decoupled weight decay.
    betas : tuple of float
        Adam coefficients.
    warmup_steps : int
        Linear warm-up from 0 to ``lr``.
    min_lr_fraction : float
        The cosine decays to ``lr * min_lr_fraction`` at the last step.
    steps : int
        Total optimisation steps.
    batch_size : int
        Global batch (split evenly over the processes of a distributed run).
    grad_clip : float
        Largest gradient norm (0: no clipping).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple = (0.9, 0.999)
    warmup_steps: int = 200
    min_lr_fraction: float = 0.02
    steps: int = 10000
    batch_size: int = 8
    grad_clip: float = 1.0

    def check(self):
        if self.lr <= 0:
            raise ConfigError("optim.lr must be > 0.")
        if self.weight_decay < 0:
            raise ConfigError("optim.weight_decay must be >= 0.")
        b = tuple(_number(v, "optim.betas") for v in self.betas)
        if len(b) != 2 or not all(0 <= v < 1 for v in b):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas!r}.")
        self.betas = b
        if self.warmup_steps < 0 or self.steps < 1 or self.batch_size < 1:
            raise ConfigError("optim.steps and optim.batch_size must be >= 1 and "
                              "optim.warmup_steps >= 0.")
        if not 0 <= self.min_lr_fraction <= 1:
            raise ConfigError("optim.min_lr_fraction must be in [0, 1].")
        if self.grad_clip < 0:
            raise ConfigError("optim.grad_clip must be >= 0.")


@dataclasses.dataclass
class LossConfig:
    """
    ``[loss]``: weights of the loss terms.

    Attributes
    ----------
    l1 : float
        Mean absolute error over valid pixels in the transformed space (the
        paper's loss).
    mse : float
        Squared error in linear flux, in units of each pixel's input noise
        (background noise and the source's own Poisson noise), with a Huber
        tail: unbiased fluxes where ``l1`` returns the posterior median (see
        `~astro_unet.training.training_loss`).  Needs an ``asinh`` or
        ``linear`` transform and the ``log_noise`` conditioning value.
    huber : float
        ``|chi|`` beyond which the ``mse`` term grows linearly (robust to
        the rare outliers of real targets: unflagged cosmic rays, hot pixels).
    kl : float
        Pixel-distribution term, the paper's KL divergence of pixel
        histograms made differentiable without histograms: the 1-D
        Wasserstein distance between the sorted pixel values of output and
        target of each crop.
    nll : float
        Laplace negative log-likelihood of channel 1 (``log b``) for a
        two-channel network (``model.out_channels = 2``); the error is
        detached, so the uncertainty head does not pull the image.
    """

    l1: float = 1.0
    mse: float = 0.0
    huber: float = 5.0
    kl: float = 0.0
    nll: float = 0.0

    def check(self):
        for name in ("l1", "mse", "kl", "nll"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0.")
        if not self.huber > 0:
            raise ConfigError("loss.huber must be > 0.")
        if self.l1 + self.mse + self.kl <= 0:
            raise ConfigError("loss.l1 + loss.mse + loss.kl must be > 0.")


@dataclasses.dataclass
class ValidationConfig:
    """
    ``[validation]``: photometric validation (`astro_unet.photometric_comparison`).

    Each validation image is degraded with `astro_unet.simulate_short_exposure`
    at each of ``ratios`` (fixed seeds), denoised with
    `astro_unet.denoise_ccd` (the inference path users get) and compared
    with its long exposure, every image thresholded at the long exposure's
    absolute level (``threshold = "reference"``).

    Attributes
    ----------
    every : int
        Steps between validations (0: only at the end).
    synthetic_scenes : int
        Synthetic validation scenes (their long exposure: Poisson noise on
        the noiseless truth).
    synthetic_size : int
        Side of the synthetic validation scenes.
    blank_scenes : int
        Blank-sky validation frames: detections in the denoised frame are
        hallucinations (``val_blank_detections``).
    real : bool
        Also use the table's ``validation_splits`` images (needs the data
        directory).
    max_size : int
        Real validation images are cropped to at most this side.
    ratios : tuple of float
        Ratios of the validation pairs.
    l1_batches : int
        Fixed batches of training-like pairs for the validation L1 loss.
    detection_threshold, min_area, aperture_radius : float, int, float
        Passed to `~astro_unet.photometric_comparison` (paper: 7, 10, 5).
    threshold : str
        ``"reference"`` or ``"self"``.
    overlap : int
        Tile overlap for `~astro_unet.denoise_ccd` (0: its default).
    """

    every: int = 500
    synthetic_scenes: int = 4
    synthetic_size: int = 256
    blank_scenes: int = 1
    real: bool = True
    max_size: int = 512
    ratios: tuple = (2.0, 5.0)
    l1_batches: int = 4
    detection_threshold: float = 7.0
    min_area: int = 10
    aperture_radius: float = 5.0
    threshold: str = "reference"
    overlap: int = 32

    def check(self):
        for name in ("every", "synthetic_scenes", "blank_scenes", "l1_batches", "overlap"):
            if getattr(self, name) < 0:
                raise ConfigError(f"validation.{name} must be >= 0.")
        if self.synthetic_size < 16 or self.max_size < 16:
            raise ConfigError("validation.synthetic_size and max_size must be >= 16.")
        ratios = tuple(_number(r, "validation.ratios") for r in self.ratios)
        if not ratios or min(ratios) <= 1:
            raise ConfigError("validation.ratios must be ratios > 1.")
        self.ratios = ratios
        if self.threshold not in ("reference", "self"):
            raise ConfigError("validation.threshold must be 'reference' or 'self'.")
        if self.min_area < 1 or self.detection_threshold <= 0 or self.aperture_radius <= 0:
            raise ConfigError("validation detection settings must be positive.")


@dataclasses.dataclass
class CheckpointConfig:
    """
    ``[checkpoint]``: checkpoints and the exported model.

    Attributes
    ----------
    every : int
        Steps between checkpoints (0: only at the end).
    keep : int
        Number of step checkpoints kept (``last.pt`` is always written).
    export : str
        ``"final"`` (the weights at the last step) or ``"best"`` (the weights
        of the validation with the highest mean F-measure).
    """

    every: int = 1000
    keep: int = 2
    export: str = "final"

    def check(self):
        if self.every < 0 or self.keep < 0:
            raise ConfigError("checkpoint.every and checkpoint.keep must be >= 0.")
        if self.export not in ("final", "best"):
            raise ConfigError("checkpoint.export must be 'final' or 'best'.")


_SECTIONS = {
    "run": RunConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "loss": LossConfig,
    "validation": ValidationConfig,
    "checkpoint": CheckpointConfig,
}

_DEFAULT_NORMALIZATION = {"unit": "electron", "transform": "asinh", "scale": "noise",
                          "noise_factor": 3.0}


def _coerce(section, name, value, default):
    """``value`` converted to the type of ``default`` (clear errors)."""
    key = f"{section}.{name}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}.")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be an integer, got {value!r}.")
        return value
    if isinstance(default, float):
        return _number(value, key)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}.")
        return value
    if isinstance(default, tuple):
        if isinstance(value, str) and all(isinstance(v, str) for v in default):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}.")
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table, got {value!r}.")
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return value  # pragma: no cover


def _plain(value):
    """Tuples -> lists, recursively (TOML/JSON friendly)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclasses.dataclass
class TrainingConfig:
    """
    Every choice of a training run (see the module docstring for the layout).

    Build it with `load_config` (from a file, a builtin name or a dict) or
    `TrainingConfig.from_dict`; `to_dict` gives the plain nested dict (the
    record stored with the model).

    Attributes
    ----------
    run : RunConfig
    model : `astro_unet.model.UNetConfig`
    normalization : dict
        The model file's ``normalization`` (see `astro_unet.denoise`).
    data : DataConfig
    optim : OptimConfig
    loss : LossConfig
    validation : ValidationConfig
    checkpoint : CheckpointConfig
    source : str
        Where the configuration was read from (not part of `to_dict`).

    Examples
    --------
    >>> from astro_unet.training import TrainingConfig
    >>> cfg = TrainingConfig.from_dict({"model": {"base_channels": 8, "depth": 3},
    ...                                 "optim": {"steps": 10}})
    >>> cfg.model.base_channels, cfg.optim.steps, cfg.optim.lr
    (8, 10, 0.001)
    >>> TrainingConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    True
    """

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    model: object = None
    normalization: dict = dataclasses.field(
        default_factory=lambda: dict(_DEFAULT_NORMALIZATION))
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    source: str = ""

    @classmethod
    def from_dict(cls, d, *, source="the configuration"):
        """
        Build and check a configuration from a nested dict.

        Parameters
        ----------
        d : dict
            Tables ``run``, ``model``, ``normalization``, ``data``, ``optim``,
            ``loss``, ``validation``, ``checkpoint`` (all optional).
        source : str
            Named in error messages.

        Returns
        -------
        config : TrainingConfig

        Raises
        ------
        ConfigError
            Unknown table or key, wrong type or value.
        """
        from ..model import UNetConfig  # imports torch: only when a config is built

        if not isinstance(d, dict):
            raise ConfigError(f"{source} must be a table, got {type(d).__name__}.")
        known = set(_SECTIONS) | {"model", "normalization"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown table [{unknown[0]}] in {source} "
                f"(known tables: {', '.join(sorted(known))}).")
        sections = {}
        for name, klass in _SECTIONS.items():
            values = d.get(name, {})
            if not isinstance(values, dict):
                raise ConfigError(f"[{name}] in {source} must be a table.")
            defaults = klass()
            fields = {f.name for f in dataclasses.fields(klass)}
            bad = sorted(set(values) - fields)
            if bad:
                raise ConfigError(
                    f"unknown key '{name}.{bad[0]}' in {source} "
                    f"(known keys of [{name}]: {', '.join(sorted(fields))}).")
            kwargs = {k: _coerce(name, k, v, getattr(defaults, k)) for k, v in values.items()}
            obj = klass(**kwargs)
            obj.check()
            sections[name] = obj
        model = d.get("model", {})
        if not isinstance(model, dict):
            raise ConfigError(f"[model] in {source} must be a table.")
        mfields = {f.name for f in dataclasses.fields(UNetConfig)}
        bad = sorted(set(model) - mfields)
        if bad:
            raise ConfigError(
                f"unknown key 'model.{bad[0]}' in {source} "
                f"(known keys of [model]: {', '.join(sorted(mfields))}).")
        try:
            model_cfg = UNetConfig.from_dict(dict(model))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"[model] in {source}: {err}") from None
        norm = d.get("normalization", _DEFAULT_NORMALIZATION)
        if not isinstance(norm, dict) or not all(
                isinstance(v, (str, int, float, bool)) for v in norm.values()):
            raise ConfigError(
                f"[normalization] in {source} must be a table of strings and numbers.")
        for key in ("unit", "transform"):
            if key not in norm:
                raise ConfigError(f"[normalization] in {source} needs a {key!r} key.")
        cfg = cls(model=model_cfg, normalization=dict(norm), source=str(source), **sections)
        cfg._check_consistency()
        return cfg

    def _check_consistency(self):
        m = self.model
        if self.data.crop_size % m.size_multiple:
            raise ConfigError(
                f"data.crop_size ({self.data.crop_size}) must be a multiple of "
                f"{m.size_multiple} (2**(model.depth - 1)).")
        if self.loss.mse > 0:
            if self.normalization.get("transform") not in ("asinh", "linear"):
                raise ConfigError("loss.mse > 0 needs normalization.transform = 'asinh' or "
                                  "'linear'.")
            if "log_noise" not in m.cond_names:
                raise ConfigError("loss.mse > 0 needs 'log_noise' in model.cond_names.")
            if self.normalization.get("unit") != "electron":
                raise ConfigError("loss.mse > 0 needs normalization.unit = 'electron'.")
        if self.loss.nll > 0 and m.out_channels != 2:
            raise ConfigError("loss.nll > 0 needs model.out_channels = 2 (uncertainty head).")
        if m.in_channels != 1:
            raise ConfigError("training supports model.in_channels = 1 only.")
        if self.data.ratio_schedule in ("paper", "mixed") and \
                self.optim.batch_size % len(self.data.paper_ratios):
            # not an error, but the groups of one crop would straddle batches
            pass

    def to_dict(self):
        """The configuration as a plain nested dict (lists, no tuples)."""
        out = {}
        out["run"] = _plain(dataclasses.asdict(self.run))
        out["model"] = _plain(self.model.to_dict())
        out["normalization"] = dict(self.normalization)
        for name in ("data", "optim", "loss", "validation", "checkpoint"):
            out[name] = _plain(dataclasses.asdict(getattr(self, name)))
        return out

    def replace(self, overrides):
        """
        A copy with dotted-key ``overrides`` applied, checked again.

        Parameters
        ----------
        overrides : dict or list of str
            ``{"optim.steps": 100}`` or ``["optim.steps=100"]`` (values of
            strings are parsed as TOML values, else taken as strings).

        Returns
        -------
        config : TrainingConfig
        """
        d = self.to_dict()
        _apply_overrides(d, overrides)
        return TrainingConfig.from_dict(d, source=self.source or "the configuration")

    @property
    def run_dir(self):
        """The run directory (``run.run_dir`` or ``runs/<name>``)."""
        return self.run.run_dir or os.path.join("runs", self.run.name)

    @property
    def output_path(self):
        """The exported model path (``run.output`` or ``<run_dir>/<name>.pt``)."""
        return self.run.output or os.path.join(self.run_dir, f"{self.run.name}.pt")


def _parse_value(text):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_overrides(d, overrides):
    if not overrides:
        return d
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. optim.steps=100).")
            items.append((key.strip(), _parse_value(value.strip())))
    for key, value in items:
        parts = key.split(".")
        if len(parts) < 2:
            raise ConfigError(f"override key {key!r} must be TABLE.KEY (e.g. optim.steps).")
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override key {key!r}: {p!r} is not a table.")
        node[parts[-1]] = value
    return d


def builtin_configs():
    """
    Names of the configurations shipped with the package.

    Returns
    -------
    names : list of str

    Examples
    --------
    >>> from astro_unet.training import builtin_configs
    >>> builtin_configs()
    ['default', 'paper', 'smoke']
    """
    folder = resources.files("astro_unet.training") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_config(source, overrides=None):
    """
    Read a training configuration.

    Parameters
    ----------
    source : str, path-like or dict
        A TOML file, the name of a shipped configuration (``"default"``,
        ``"paper"``, ``"smoke"``, with or without ``.toml``), or a nested
        dict of tables.
    overrides : dict or list of str, optional
        Dotted keys to change, e.g. ``{"optim.steps": 100}`` or
        ``["optim.steps=100", "run.device='cpu'"]``.

    Returns
    -------
    config : TrainingConfig

    Raises
    ------
    ConfigError
        Unknown table or key, wrong type or value, TOML syntax error.
    FileNotFoundError
        ``source`` is neither a file nor a shipped configuration.

    Examples
    --------
    >>> from astro_unet.training import load_config
    >>> cfg = load_config("smoke", overrides={"optim.steps": 3})
    >>> cfg.optim.steps, cfg.data.synthetic_fraction
    (3, 1.0)
    """
    if isinstance(source, dict):
        d = copy.deepcopy(source)
        name = "the configuration"
    else:
        path = os.fspath(source)
        if os.path.isfile(path):
            name = path
            with open(path, "rb") as f:
                text = f.read()
        else:
            stem = path[:-5] if path.endswith(".toml") else path
            if os.sep in stem or stem not in builtin_configs():
                raise FileNotFoundError(
                    f"configuration {path!r} is neither a file nor a shipped configuration "
                    f"({', '.join(builtin_configs())}).")
            ref = resources.files("astro_unet.training") / "configs" / f"{stem}.toml"
            text = ref.read_bytes()
            name = f"astro_unet/training/configs/{stem}.toml"
        try:
            d = tomllib.loads(text.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{name} is not valid TOML: {err}") from None
    _apply_overrides(d, overrides)
    return TrainingConfig.from_dict(d, source=name)
