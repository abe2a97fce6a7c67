# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The Astro U-net network, its configuration and its file format.

The reference architecture is the one of Vojtekova et al. (2021, MNRAS 503,
3204; `PAPER_CONFIG`): five resolution levels with 32-64-128-256-512
channels, two 3x3 convolutions (zero padding) followed by LeakyReLU(0.2) per
level, 2x2 max-pooling down, 2x2 transposed convolutions up, skip
connections by concatenation, the exposure-time ratio (and any other scalar
conditioning value) broadcast to constant channels and concatenated at the
first decoder stage, and a 1x1 output convolution.  Width (``base_channels``)
and depth are configurable; `DEFAULT_CONFIG` is the lighter network shipped
as the package default (half the width, see ``benchmarks/speed.py``).

Two options go beyond the paper:

* ``residual=True``: the network predicts a correction that is added to its
  (transformed) input, so an untrained or zero-initialised output layer is the
  identity;
* ``out_channels=2``: a second output channel holds ``log(b)``, the log of the
  scale of a Laplace distribution of the prediction error in the transformed
  space (the natural uncertainty of an L1-trained network).

A model file (``.pt``) is a plain dictionary saved with `torch.save` and read
with ``torch.load(..., weights_only=True)``::

    {"format": "astro_unet-model", "format_version": 1,
     "config": UNetConfig.to_dict(), "normalization": {...},
     "metadata": {...}, "state_dict": {name: tensor}}

The ``normalization`` entry says how pixels are mapped in and out of the
network; its meaning is defined in :ref:`normalization`
(``astro_unet/_normalization.py``).

This module imports `torch`; the rest of the package imports it lazily.
"""

import dataclasses
import math
import os

import torch
from torch import nn

from ._utils import atomic_output, sha256_file

__all__ = [
    "UNetConfig",
    "AstroUNet",
    "ModelFileError",
    "save_model",
    "load_model_file",
    "effective_receptive_field",
    "PAPER_CONFIG",
    "DEFAULT_CONFIG",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

#: Value of the ``"format"`` entry of a model file.
FORMAT_NAME = "astro_unet-model"
#: Newest file format version this module reads and writes.
FORMAT_VERSION = 1

#: Conditioning values `astro_unet.denoise.denoise_ccd` knows how to supply.
KNOWN_CONDITIONS = ("ratio", "log_exptime", "read_noise", "log_noise")


class ModelFileError(ValueError):
    """
    A file is not a valid astro_unet model file (corrupt, wrong format, ...).

    Examples
    --------
    >>> from astro_unet.model import ModelFileError, load_model_file
    >>> try:
    ...     load_model_file("no-such-model.pt")
    ... except ModelFileError as err:
    ...     print(err)
    model file 'no-such-model.pt' does not exist.
    """


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """
    Hyper-parameters of an `AstroUNet` (immutable).

    Parameters
    ----------
    in_channels : int
        Number of image channels fed to the network (1 for a CCD frame).
    out_channels : int
        1 (denoised image) or 2 (denoised image and ``log(b)``, the log of
        the Laplace scale of its error in the transformed space).
    base_channels : int
        Channels of the first level; level ``i`` has ``base_channels * 2**i``.
    depth : int
        Number of resolution levels (>= 2); images must have sides that are
        multiples of ``2**(depth - 1)``.
    convs_per_level : int
        3x3 convolutions per level in the encoder and in the decoder.
    negative_slope : float
        Slope of the LeakyReLU for negative inputs.
    cond_names : tuple of str
        Names of the scalar conditioning values (``"ratio"``,
        ``"log_exptime"``, ``"read_noise"``), concatenated as constant
        channels at the first decoder stage.
    residual : bool
        If True the network output (channel 0) is added to its input.

    Examples
    --------
    >>> from astro_unet.model import UNetConfig
    >>> cfg = UNetConfig(base_channels=8, depth=3)
    >>> cfg.to_dict()["base_channels"]
    8
    >>> UNetConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 32
    depth: int = 5
    convs_per_level: int = 2
    negative_slope: float = 0.2
    cond_names: tuple = ("ratio",)
    residual: bool = False

    def __post_init__(self):
        for name in ("in_channels", "base_channels", "depth", "convs_per_level"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive integer, got {value!r}.")
        if self.depth < 2:
            raise ValueError(f"UNetConfig.depth must be >= 2, got {self.depth}.")
        if self.out_channels not in (1, 2) or isinstance(self.out_channels, bool):
            raise ValueError(
                f"UNetConfig.out_channels must be 1 or 2 (image, image + log-scale), "
                f"got {self.out_channels!r}."
            )
        slope = float(self.negative_slope)
        if not math.isfinite(slope) or slope < 0:
            raise ValueError(
                f"UNetConfig.negative_slope must be >= 0, got {self.negative_slope!r}.")
        object.__setattr__(self, "negative_slope", slope)
        names = self.cond_names
        if isinstance(names, str):
            names = (names,)
        names = tuple(names)
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ValueError(
                "UNetConfig.cond_names must be distinct non-empty strings, "
                f"got {self.cond_names!r}."
            )
        object.__setattr__(self, "cond_names", names)
        if not isinstance(self.residual, bool):
            raise ValueError(f"UNetConfig.residual must be True or False, got {self.residual!r}.")

    @property
    def size_multiple(self):
        """Image sides must be multiples of this number (``2**(depth - 1)``)."""
        return 2 ** (self.depth - 1)

    @property
    def receptive_field(self):
        """
        Theoretical receptive field (full width in pixels) of one output pixel.

        The support of the output pixel is propagated back along the longest
        path (decoder convolutions and transposed convolutions, bottleneck,
        max-pools and encoder convolutions) for every alignment of the pixel
        with the pooling grid; the widest support is returned.
        """
        d, c = self.depth, self.convs_per_level
        best = 0
        for p in range(2 ** (d - 1)):
            lo = hi = p
            for _ in range(d - 1):  # decoder convolutions, then 2x2 transposed conv
                lo, hi = (lo - c) // 2, (hi + c) // 2
            lo, hi = lo - c, hi + c  # bottleneck
            for _ in range(d - 1):  # 2x2 max-pool, then encoder convolutions
                lo, hi = 2 * lo - c, 2 * hi + 1 + c
            best = max(best, hi - lo + 1)
        return best

    @property
    def channels(self):
        """Channels of each level, e.g. ``(32, 64, 128, 256, 512)``."""
        return tuple(self.base_channels * 2 ** i for i in range(self.depth))

    def to_dict(self):
        """A JSON/``weights_only``-safe dict (lists instead of tuples)."""
        d = dataclasses.asdict(self)
        d["cond_names"] = list(self.cond_names)
        return d

    @classmethod
    def from_dict(cls, d):
        """
        Build a config from `to_dict` output; unknown keys raise `ValueError`.
        """
        if not isinstance(d, dict):
            raise ValueError(f"config must be a dict, got {type(d).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown UNetConfig keys: {sorted(unknown)}.")
        d = dict(d)
        if "cond_names" in d:
            d["cond_names"] = tuple(d["cond_names"])
        return cls(**d)


#: The network of Vojtekova et al. (2021): 32-64-128-256-512 channels.
PAPER_CONFIG = UNetConfig()

#: The package default: the paper's layout and depth (receptive field 204 px)
#: at half the width, 16-32-64-128-256 channels, residual.  4.0 times fewer
#: multiply-adds per pixel than `PAPER_CONFIG` (46 k instead of 184 k);
#: chosen with ``benchmarks/speed.py`` so that a 4096x4096 frame takes well
#: under a minute on a 2-core CPU.
DEFAULT_CONFIG = UNetConfig(base_channels=16, depth=5, residual=True)


def _conv_block(cin, cout, n, slope):
    layers = []
    for k in range(n):
        layers.append(nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=1))
        layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class AstroUNet(nn.Module):
    """
    The Astro U-net (a `torch.nn.Module`).

    Parameters
    ----------
    config : `UNetConfig`, optional
        The architecture; `PAPER_CONFIG` when omitted.
    **overrides
        Fields of `UNetConfig` that replace those of ``config``.

    Notes
    -----
    ``forward(x, cond)`` takes ``x`` of shape ``(B, in_channels, H, W)``
    (``H`` and ``W`` multiples of `size_multiple`) and ``cond`` of shape
    ``(B, len(config.cond_names))`` (None when there is no conditioning
    value) and returns ``(B, out_channels, H, W)``.  The output convolution
    and the residual addition always run in float32, also under
    `torch.autocast`.

    Examples
    --------
    >>> import torch
    >>> from astro_unet.model import AstroUNet
    >>> net = AstroUNet(base_channels=4, depth=3)
    >>> net.size_multiple, net.receptive_field
    (4, 44)
    >>> y = net(torch.zeros(2, 1, 16, 16), torch.full((2, 1), 2.0))
    >>> tuple(y.shape)
    (2, 1, 16, 16)
    """

    def __init__(self, config=None, **overrides):
        super().__init__()
        if config is None:
            config = PAPER_CONFIG
        elif isinstance(config, dict):
            config = UNetConfig.from_dict(config)
        elif not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}.")
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self._config = config
        ch = config.channels
        n, slope = config.convs_per_level, config.negative_slope
        ncond = len(config.cond_names)
        self.encoders = nn.ModuleList(
            [_conv_block(config.in_channels if i == 0 else ch[i - 1], ch[i], n, slope)
             for i in range(config.depth)]
        )
        self.pool = nn.MaxPool2d(2)
        # decoder stage k works at level depth-2-k (k = 0 is the first, coarsest stage)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for k, level in enumerate(range(config.depth - 2, -1, -1)):
            self.upsamplers.append(nn.ConvTranspose2d(ch[level + 1], ch[level], 2, stride=2))
            extra = ncond if k == 0 else 0
            self.decoders.append(_conv_block(2 * ch[level] + extra, ch[level], n, slope))
        self.head = nn.Conv2d(ch[0], config.out_channels, 1)

    @property
    def config(self):
        """The `UNetConfig` of this network."""
        return self._config

    @property
    def size_multiple(self):
        """Image sides must be multiples of this number (``2**(depth - 1)``)."""
        return self._config.size_multiple

    @property
    def receptive_field(self):
        """Theoretical receptive field (full width, pixels) of an output pixel."""
        return self._config.receptive_field

    def _check_input(self, x, cond):
        cfg = self._config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"x must have shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}."
            )
        m = cfg.size_multiple
        if x.shape[2] % m or x.shape[3] % m:
            raise ValueError(
                f"image sides must be multiples of {m} for depth {cfg.depth}, "
                f"got {tuple(x.shape[2:])}."
            )
        ncond = len(cfg.cond_names)
        if ncond == 0:
            return None
        if cond is None:
            raise ValueError(f"this network needs conditioning values {cfg.cond_names}.")
        cond = torch.as_tensor(cond, device=x.device)
        if cond.ndim == 1:
            cond = cond.reshape(1, -1).expand(x.shape[0], -1)
        if cond.shape != (x.shape[0], ncond):
            raise ValueError(
                f"cond must have shape (B, {ncond}) = {(x.shape[0], ncond)}, "
                f"got {tuple(cond.shape)}."
            )
        return cond

    def _body(self, x, cond):
        """Network output before the residual addition (float32)."""
        cond = self._check_input(x, cond)
        skips = []
        h = x
        for i, enc in enumerate(self.encoders):
            h = enc(h)
            if i < len(self.encoders) - 1:
                skips.append(h)
                h = self.pool(h)
        for k, (up, dec) in enumerate(zip(self.upsamplers, self.decoders)):
            h = up(h)
            parts = [h, skips.pop()]
            if k == 0 and cond is not None:
                parts.append(cond.to(h.dtype)[:, :, None, None].expand(
                    -1, -1, h.shape[2], h.shape[3]))
            h = dec(torch.cat(parts, dim=1))
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(h.float())

    def forward(self, x, cond=None):
        """Denoise ``x`` (B, C, H, W) given ``cond`` (B, n_cond)."""
        out = self._body(x, cond)
        if self._config.residual:
            with torch.autocast(device_type=x.device.type, enabled=False):
                first = out[:, :1] + x[:, :1].float()
                out = torch.cat([first, out[:, 1:]], dim=1) if out.shape[1] > 1 else first
        return out

    def extra_repr(self):
        c = self._config
        return (f"channels={c.channels}, convs_per_level={c.convs_per_level}, "
                f"cond_names={c.cond_names}, residual={c.residual}, "
                f"out_channels={c.out_channels}")


def effective_receptive_field(model, *, fraction=0.99, n_samples=4, cond=None, seed=0):
    """
    Measure the effective receptive field of ``model`` (radius in pixels).

    The gradient of one output pixel (channel 0, before the residual
    addition) with respect to a standard-normal random input is computed at
    ``n_samples`` positions (covering the pooling alignments); the result is
    the smallest Chebyshev radius ``R`` (a square of side ``2 R + 1``
    centred on the pixel) holding ``fraction`` of the summed absolute
    gradient.  Tiles overlapping by at least ``R`` pixels hide the network's
    zero padding at tile edges.  Trained networks usually have a wider
    effective field than randomly initialised ones; re-measure after training.

    Parameters
    ----------
    model : `AstroUNet`
        The network (on any device; its parameters are not modified).
    fraction : float
        Fraction of the gradient to enclose (0 < fraction <= 1).
    n_samples : int
        Number of output pixels averaged.
    cond : sequence of float, optional
        Conditioning values (default 2.0 for each).
    seed : int
        Seed of the random input, so that the result is reproducible.

    Returns
    -------
    radius : int
        0 when the output does not depend on the input (e.g. a zero output
        layer).

    Examples
    --------
    >>> import torch
    >>> from astro_unet.model import AstroUNet, effective_receptive_field
    >>> _ = torch.manual_seed(0)
    >>> net = AstroUNet(base_channels=4, depth=3)
    >>> r = effective_receptive_field(net)
    >>> 0 < r <= net.receptive_field // 2
    True
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    cfg = model.config
    m = cfg.size_multiple
    half = cfg.receptive_field // 2
    size = m * math.ceil((2 * half + 2 * m + 1) / m)
    try:
        device = next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a network always has parameters
        device = torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    ncond = len(cfg.cond_names)
    if cond is None:
        cond = [2.0] * ncond
    cond_t = torch.tensor([list(cond)], dtype=torch.float32, device=device) if ncond else None
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    nbins = size
    profile = torch.zeros(nbins, dtype=torch.float64)
    with torch.enable_grad():
        for k in range(n_samples):
            x = torch.randn(1, cfg.in_channels, size, size, generator=gen).to(device)
            x.requires_grad_(True)
            cy = cx = size // 2 - m // 2 + (k % m)
            out = model._body(x, cond_t)[0, 0, cy, cx]
            (grad,) = torch.autograd.grad(out, x)
            g = grad[0].abs().sum(0).double().cpu()
            dist = torch.maximum((yy - cy).abs(), (xx - cx).abs())
            profile += torch.bincount(dist.flatten(), weights=g.flatten(), minlength=nbins)[:nbins]
    total = float(profile.sum())
    if total == 0 or not math.isfinite(total):
        return 0
    cum = torch.cumsum(profile, 0) / total
    return int(torch.searchsorted(cum, torch.tensor([fraction - 1e-12], dtype=cum.dtype))[0])


def save_model(model, path, *, normalization, metadata=None, half=True):
    """
    Write ``model`` to a model file (atomically) and return its sha256.

    Parameters
    ----------
    model : `AstroUNet`
        The network to save.
    path : str or path-like
        Destination (conventionally ``.pt``); written to a temporary file in
        the same directory first, then renamed, so a reader never sees a
        half-written file.
    normalization : dict
        How pixels are mapped in and out of the network (see
        `astro_unet.denoise`), e.g. ``{"unit": "electron", "transform":
        "asinh", "scale": 10.0}``.
    metadata : dict, optional
        Free metadata (name, description, version, training, created).
    half : bool
        Store floating-point weights as float16 (halves the size; the values
        are loaded back as float32).

    Returns
    -------
    sha256 : str
        Hex digest of the written file.

    Examples
    --------
    >>> import os, tempfile
    >>> from astro_unet.model import AstroUNet, save_model, load_model_file
    >>> net = AstroUNet(base_channels=4, depth=3)
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.pt")
    >>> digest = save_model(net, path, normalization={"unit": "electron",
    ...                     "transform": "asinh", "scale": 10.0})
    >>> len(digest)
    64
    >>> net2, info = load_model_file(path)
    >>> info["config"] == net.config
    True
    """
    if not isinstance(model, AstroUNet):
        raise TypeError(f"model must be an AstroUNet, got {type(model).__name__}.")
    if not isinstance(normalization, dict):
        raise TypeError("normalization must be a dict.")
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[key] = tensor.contiguous().clone()
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "normalization": dict(normalization),
        "metadata": dict(metadata or {}),
        "state_dict": state,
    }
    path = os.fspath(path)
    with atomic_output(path) as tmp:  # the user's permissions, no partial file
        with open(tmp, "wb") as f:
            torch.save(payload, f)
    return sha256_file(path)


def _check_map_location(map_location):
    """`RuntimeError` for a CUDA ``map_location`` without CUDA (torch's error is cryptic)."""
    if isinstance(map_location, (str, torch.device)):
        try:
            device = torch.device(map_location)
        except RuntimeError:
            raise ValueError(f"map_location {map_location!r} is not a torch device; use "
                             "'cpu', 'cuda' or 'cuda:N'.") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise RuntimeError(
                f"map_location={map_location!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, {build}); use map_location='cpu'.")


def load_model_file(path, *, map_location="cpu"):
    """
    Read a model file written by `save_model`.

    Parameters
    ----------
    path : str or path-like
        The ``.pt`` file.
    map_location : str or `torch.device`
        Where to put the tensors (passed to `torch.load`).

    Returns
    -------
    model : `AstroUNet`
        In float32 and eval mode, with attributes ``normalization`` and
        ``metadata`` set from the file.
    info : dict
        Keys ``config`` (`UNetConfig`), ``normalization``, ``metadata``,
        ``format_version``, ``path`` and ``sha256`` (of the file).

    Raises
    ------
    ModelFileError
        The file is missing, unreadable, truncated or corrupt, has another
        ``format``, an unknown ``format_version``, missing keys, or weights
        that do not match its configuration.
    RuntimeError
        ``map_location`` is a CUDA device and CUDA is not available.
    ValueError
        ``map_location`` is a string that names no torch device.

    Examples
    --------
    >>> import os, tempfile
    >>> from astro_unet.model import ModelFileError, load_model_file
    >>> bad = os.path.join(tempfile.mkdtemp(), "bad.pt")
    >>> with open(bad, "wb") as f:
    ...     _ = f.write(b"not a model")
    >>> try:
    ...     load_model_file(bad)
    ... except ModelFileError as err:
    ...     print("unreadable" in str(err))
    True
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"model file {path!r} does not exist.")
    _check_map_location(map_location)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise ModelFileError(
            f"model file {path!r} is unreadable (truncated, corrupt or not a torch file): "
            f"{type(err).__name__}: {err}"
        ) from err
    if not isinstance(payload, dict):
        raise ModelFileError(f"model file {path!r} does not hold a dict.")
    if payload.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"model file {path!r} has format {payload.get('format')!r}, "
            f"expected {FORMAT_NAME!r}."
        )
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"model file {path!r} has format_version {version!r}; this astro_unet "
            f"reads version {FORMAT_VERSION}. Upgrade astro_unet or re-save the model."
        )
    missing = [k for k in ("config", "normalization", "metadata", "state_dict") if k not in payload]
    if missing:
        raise ModelFileError(f"model file {path!r} lacks the entries {missing}.")
    for key in ("normalization", "metadata", "state_dict"):
        if not isinstance(payload[key], dict):
            raise ModelFileError(f"model file {path!r}: entry {key!r} is not a dict.")
    try:
        config = UNetConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"model file {path!r} has an invalid config: {err}") from err
    model = AstroUNet(config)
    state = payload["state_dict"]
    try:
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        model.load_state_dict(state, strict=True)
    except (RuntimeError, AttributeError, TypeError) as err:
        raise ModelFileError(
            f"model file {path!r}: weights do not match its config: {err}"
        ) from err
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise ModelFileError(f"model file {path!r} has non-finite weights.")
    model.to(map_location).eval()
    model.normalization = dict(payload["normalization"])
    model.metadata = dict(payload["metadata"])
    info = {
        "config": config,
        "normalization": dict(payload["normalization"]),
        "metadata": dict(payload["metadata"]),
        "format_version": version,
        "path": os.path.abspath(path),
        "sha256": sha256_file(path),
    }
    return model, info
