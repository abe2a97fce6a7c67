# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Denoise a CCD frame with an Astro U-net: `denoise_ccd`.

What the network sees and returns
---------------------------------
A model file carries a ``normalization`` dict that fixes how pixels enter
and leave its network.  Keys:

``unit``
    ``"electron"`` (default models): the network input is the number of
    electrons collected in the *short* exposure; ``"electron/s"``: the
    count rate.
``transform``
    Applied to the pixels in ``unit`` before the network and inverted after:

    * ``"asinh"``: ``y = asinh(x / scale)`` (linear for faint pixels,
      logarithmic for bright ones; needs ``scale``);
    * ``"anscombe"``: the generalised Anscombe transform for Poisson plus
      Gaussian read noise, ``y = 2 sqrt(max(x + 3/8 + RON**2, 0))``
      (variance ~1 for every flux).  Inverted with the algebraic inverse
      ``x = (y/2)**2 - 3/8 - RON**2`` (the network, trained with an L1 loss,
      estimates a median, not the mean of the transformed noisy values, so
      the "exact unbiased" inverse of Makitalo & Foi does not apply), or with
      the asymptotically unbiased ``(y/2)**2 - 1/8 - RON**2`` when
      ``"inverse": "asymptotic"``.  ``RON`` is the ``read_noise`` argument
      of `denoise_ccd` or else ``normalization["read_noise"]`` (electrons);
    * ``"linear"``: ``y = x / scale``.

    ``scale`` may be the string ``"noise"``: it is then ``noise_factor``
    (default 1) times the robust background noise of the input image
    (``1.4826 MAD / sqrt 2`` of neighbouring-pixel differences, in the model
    unit), so that faint pixels enter the network in units of their own
    noise whatever the exposure time, sky level or detector.  The noise used
    is recorded in the header (``DNNOISE``, electrons).

    ``offset`` (asinh and linear only; default 0) is subtracted before the
    transform and added back after it; ``"median"`` means the median of the
    input image, so that a sky pedestal does not push the background into the
    logarithmic part of the asinh, where its noise would almost vanish.
``read_noise`` (optional)
    Read noise (electrons) of the training data, used when `denoise_ccd`
    gets no ``read_noise``.
``overlap``, ``tile_size`` (optional)
    Tiling defaults recommended for this model.

The network output (channel 0) is the transformed *expected* value of the
pixel at the short exposure time but with the quality of an exposure ``r``
times longer (the paper's training target: the long exposure divided by
``r``).  After the inverse transform the result is converted back to the
input's unit:

* rate units (``electron/s``, ``adu/s``): the output is the denoised rate;
* count units (``electron``, ``adu``): the output is the counts expected in
  the long exposure ``t r`` (the short-exposure estimate multiplied by ``r``),
  so that the output looks like an exposure ``r`` times longer.

In both cases ``EXPTIME`` becomes ``t r`` (when ``t`` is known).

Conditioning values (``model.config.cond_names``): ``"ratio"`` is ``r``;
``"log_exptime"`` is log10 of the short exposure time in seconds;
``"read_noise"`` is the read noise in electrons; ``"log_noise"`` is log10
of the background noise defined above (model unit).  The training code builds
its inputs with the same private functions (``_network_input``), so training
and inference cannot drift apart.

Uncertainty of the output
-------------------------
With a two-channel model (``out_channels=2``) channel 1 is ``log b``, the
Laplace scale of the network's error in the transformed space; the standard
deviation ``sqrt(2) b`` is propagated through the inverse transform
(``sigma_x = sqrt(2) b |dx/dy|``) and the header gets
``DNUNCERT = 'model'``.  Otherwise the uncertainty is an *estimate*: the
Poisson and read noise expected in a real exposure of ``t r`` seconds at the
denoised flux, ``sqrt(max(N_long, 0) + RON**2)`` electrons for ``N_long``
electrons (``DNUNCERT = 'poisson-estimate'``).  It ignores the error of the
network itself, sky already subtracted from the image and dark current, so
it is a lower bound.  The input's uncertainty is never copied.

Masked and non-finite pixels
----------------------------
Pixels that are masked or not finite are replaced, before the network, by
the value of the nearest usable pixel (`scipy.ndimage.distance_transform_edt`),
so that they neither inject NaN into the network nor pull neighbours towards
zero.  In the output they are masked (output mask = input mask | non-finite
input), and the non-finite input pixels are NaN again.

Tiling
------
The image is processed in overlapping tiles blended with feathered weights
(`astro_unet.tiling`); ``DNTILE`` records the largest tile side (tiles are
shrunk so that no more of them are needed, and never exceed the image).
The default overlap is the model's ``overlap`` recommendation if its file
has one, otherwise four times the network's effective receptive field (the
Chebyshev radius holding 99 % of the gradient of an output pixel,
`astro_unet.model.effective_receptive_field`, measured once per loaded
model), at least 32 pixels, rounded up to a multiple of 8.  For the default
architecture at random initialisation the effective radius is 5-6 pixels
(five seeds), so the overlap is 32.  Measured on that network (768x768
image, 256-pixel tiles, compared with one whole-image pass;
``benchmarks/speed.py --seams``), the largest tile-seam error relative to
the standard deviation of the network's correction was 1.2 at 8 pixels of
overlap, 0.38 at 16, 0.093 at 32, 0.042 at 48 and 0.024 at 64 (rms 0.071,
0.022, 0.0056, 0.0025, 0.0014).
Default tile sides are 512 pixels on the CPU and 1024 on CUDA, or 6 times
the overlap when that is larger (at most 2048), with 1 and 8 tiles per
forward pass.

Devices and precision
---------------------
``device="auto"`` uses CUDA when available, else the CPU.  On the CPU the
network runs in float32 under `torch.inference_mode` with channels-last
memory (faster with oneDNN), the transforms and the blending in numpy
(`astro_unet.tiling.process_tiles`); results are deterministic.  On CUDA
the image is sent to the device once and the transform, tiles, blending and
inverse transform all run there (the same tile plan and windows), with
`torch.autocast` for the network (``AUTOCAST_DTYPE``: bfloat16 where
supported, else float16; set it to ``"float16"`` for more mantissa bits or
None for float32); its output layer and the blending run in float32, the
inverse transform in float64.  A CUDA out-of-memory error is retried with half the batch, then
half the tile size.  float32 images give float32 results, other types
float64.
"""

import collections
import hashlib
import math
import os
import weakref
from copy import deepcopy

import numpy as np
import astropy.units as u
from astropy import log
from astropy.nddata import StdDevUncertainty

from . import _validation
from ._config import conf
from ._logging import log_step, set_keyword
from .tiling import MODES, PAPER_STEP, PAPER_TILE_SIZE, process_tiles

__all__ = ["denoise_ccd"]

#: Normalization of the package's default models (see the module docstring).
DEFAULT_NORMALIZATION = {"unit": "electron", "transform": "asinh", "scale": 10.0}

TRANSFORMS = ("asinh", "anscombe", "linear")

#: Default tile side per device type (pixels).
DEFAULT_TILE_SIZE = {"cpu": 512, "cuda": 1024}
#: Default number of tiles per forward pass per device type.
DEFAULT_BATCH_SIZE = {"cpu": 1, "cuda": 8}
#: Largest tile side accepted (larger requests are reduced to this).
MAX_TILE_SIZE = 2048
#: Default tiles are at least this many times the overlap (up to MAX_TILE_SIZE).
TILE_PER_OVERLAP = 6
#: Mixed precision of the network on CUDA: "auto" (bfloat16 where supported,
#: else float16), "bfloat16", "float16" or None (float32).
AUTOCAST_DTYPE = "auto"
#: Smallest default overlap (pixels).
MIN_OVERLAP = 32
#: Fraction of the gradient enclosed by the effective receptive field.
ERF_FRACTION = 0.99
#: Default overlap = this many effective receptive-field radii (at least MIN_OVERLAP).
ERF_OVERLAP_FACTOR = 4

_CACHE_SIZE = 4
_model_cache = collections.OrderedDict()
_erf_cache = weakref.WeakKeyDictionary()
_instance_cache = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------
# normalization / transforms


def _check_normalization(norm):
    """Validate a normalization dict and return a cleaned copy."""
    if not isinstance(norm, dict):
        raise ValueError(f"model normalization must be a dict, got {type(norm).__name__}.")
    out = dict(norm)
    try:
        unit = u.Unit(out.get("unit", "electron"))
    except (ValueError, TypeError):
        raise ValueError(f"model normalization has an invalid unit {out.get('unit')!r}.") from None
    if unit == u.electron:
        out["unit"] = "electron"
    elif unit == u.electron / u.s:
        out["unit"] = "electron/s"
    else:
        raise ValueError(
            f"model normalization unit must be 'electron' or 'electron/s', got '{unit}'."
        )
    offset = out.get("offset", 0.0)
    if offset != "median" and (isinstance(offset, bool) or not isinstance(offset, (int, float))
                               or not math.isfinite(offset)):
        raise ValueError(
            f"normalization 'offset' must be a number or 'median', got {offset!r}.")
    transform = out.get("transform")
    if transform not in TRANSFORMS:
        raise ValueError(
            f"model normalization transform must be one of {TRANSFORMS}, got {transform!r}."
        )
    if transform in ("asinh", "linear"):
        scale = out.get("scale")
        if scale == "noise":
            factor = out.setdefault("noise_factor", 1.0)
            if (not isinstance(factor, (int, float)) or not math.isfinite(factor)
                    or factor <= 0):
                raise ValueError(
                    f"normalization 'noise_factor' must be a positive number, got {factor!r}."
                )
            out["noise_factor"] = float(factor)
        elif not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(
                f"model normalization for transform {transform!r} needs a positive "
                f"'scale' or 'noise', got {scale!r}."
            )
        else:
            out["scale"] = float(scale)
    if transform == "anscombe":
        inverse = out.setdefault("inverse", "algebraic")
        if inverse not in ("algebraic", "asymptotic"):
            raise ValueError(
                f"normalization 'inverse' must be 'algebraic' or 'asymptotic', got {inverse!r}."
            )
    ron = out.get("read_noise")
    if ron is not None and (not isinstance(ron, (int, float)) or not ron >= 0):
        raise ValueError(f"normalization 'read_noise' must be >= 0, got {ron!r}.")
    return out


class _NumpyOps:
    asinh = staticmethod(np.arcsinh)
    sinh = staticmethod(np.sinh)
    cosh = staticmethod(np.cosh)
    sqrt = staticmethod(np.sqrt)
    exp = staticmethod(np.exp)
    abs = staticmethod(np.abs)

    @staticmethod
    def clip(a, lo=None, hi=None):
        return np.clip(a, lo, hi)


def _torch_ops():
    import torch

    class _TorchOps:
        asinh = staticmethod(torch.asinh)
        sinh = staticmethod(torch.sinh)
        cosh = staticmethod(torch.cosh)
        sqrt = staticmethod(torch.sqrt)
        exp = staticmethod(torch.exp)
        abs = staticmethod(torch.abs)

        @staticmethod
        def clip(a, lo=None, hi=None):
            return torch.clamp(a, lo, hi)

    return _TorchOps


def _forward_transform(x, norm, ron, ops=_NumpyOps):
    """Pixels in the model unit -> network input (numpy or torch arrays)."""
    t = norm["transform"]
    if t == "asinh":
        return ops.asinh((x - norm.get("offset", 0.0)) / norm["scale"])
    if t == "linear":
        return (x - norm.get("offset", 0.0)) / norm["scale"]
    return 2.0 * ops.sqrt(ops.clip(x + (0.375 + ron ** 2), 0.0))


def _inverse_transform(y, norm, ron, ops=_NumpyOps, *, derivative=False):
    """Inverse transform (and its derivative dx/dy if ``derivative``)."""
    t = norm["transform"]
    if t == "asinh":
        s = norm["scale"]
        x = s * ops.sinh(y) + norm.get("offset", 0.0)
        dxdy = s * ops.cosh(y) if derivative else None
    elif t == "linear":
        x = y * norm["scale"] + norm.get("offset", 0.0)
        dxdy = 0 * y + norm["scale"] if derivative else None
    else:
        offset = 0.125 if norm.get("inverse") == "asymptotic" else 0.375
        x = (y / 2.0) ** 2 - (offset + ron ** 2)
        dxdy = ops.abs(y) / 2.0 if derivative else None
    return x, dxdy


def _network_to_output(out, *, norm, ron, ratio, to_model, factor, ops=_NumpyOps):
    """
    Network output (C, H, W) -> (image, standard deviation) in the output unit.

    ``to_model`` converts short-exposure electrons to the model unit and
    ``factor`` short-exposure electrons to the output unit.
    """
    with_model_sigma = out.shape[0] == 2
    x_model, dxdy = _inverse_transform(out[0], norm, ron, ops, derivative=with_model_sigma)
    out_e = x_model / to_model          # electrons at the short exposure, long quality
    del x_model
    result = out_e * factor
    if with_model_sigma:
        b = ops.exp(ops.clip(out[1], -30.0, 30.0))
        sigma = (math.sqrt(2.0) * factor / to_model) * b * ops.abs(dxdy)
    else:
        # Poisson + read noise of a real exposure r times longer
        n_long = ops.clip(out_e * ratio, 0.0)
        sigma = ops.sqrt(n_long + ron ** 2) * (factor / ratio)
    return result, sigma


#: Smallest background noise (electrons) used for noise-scaled normalizations.
MIN_NOISE = 1e-3


def _background_noise(electrons, bad=None):
    """
    Robust per-pixel background noise (electrons) of a short exposure.

    ``1.4826 * MAD / sqrt(2)`` of the differences of horizontally adjacent
    usable pixels: insensitive to sources, gradients and a few bad pixels.
    Noise correlated between neighbours (drizzled images) is underestimated
    in the same way in training and in `denoise_ccd`, which both call this.
    """
    values = np.asarray(electrons, dtype=np.float64)
    diff = values[:, 1:] - values[:, :-1]
    good = np.isfinite(diff)
    if bad is not None:
        bad = np.asarray(bad, dtype=bool)
        good &= ~(bad[:, 1:] | bad[:, :-1])
    diff = diff[good]
    if diff.size < 2:
        return MIN_NOISE
    if diff.size > 4_000_000:  # a regular subsample is plenty for a median
        diff = diff[:: diff.size // 2_000_000]
    mad = np.median(np.abs(diff - np.median(diff)))
    return max(float(1.4826 * mad / math.sqrt(2.0)), MIN_NOISE)


def _background_level(values, bad=None):
    """Median of the usable pixels (a regular subsample of large images)."""
    values = np.asarray(values, dtype=np.float64)
    good = np.isfinite(values)
    if bad is not None:
        good &= ~np.asarray(bad, dtype=bool)
    v = values[good]
    if v.size == 0:
        return 0.0
    if v.size > 4_000_000:
        v = v[:: v.size // 2_000_000]
    return float(np.median(v))


def _statistics_needed(norm, cond_names):
    """``(noise, level)``: whether the normalization or conditioning needs them."""
    return (norm.get("scale") == "noise" or "log_noise" in cond_names,
            norm.get("offset") == "median")


def _resolve_inputs(x_model, bad, *, norm, ratio, exptime, ron, cond_names):
    """
    Numeric normalization and conditioning vector for one short exposure.

    ``x_model`` is the (bad-pixel filled) image in the model unit.  Returns
    ``(norm, cond, noise)``: ``norm`` with a numeric ``scale`` (a noise-scaled
    ``scale = "noise"`` becomes ``noise_factor`` times the background noise),
    the list of conditioning values in ``cond_names`` order and the background
    noise in the model unit (None when neither needs it).  An ``offset`` of
    ``"median"`` becomes the median of the usable pixels.
    """
    need_noise, need_level = _statistics_needed(norm, cond_names)
    noise = _background_noise(x_model, bad) if need_noise else None
    level = _background_level(x_model, bad) if need_level else None
    norm, cond = _apply_statistics(norm, noise=noise, level=level, ratio=ratio,
                                   exptime=exptime, ron=ron, cond_names=cond_names)
    return norm, cond, noise


def _apply_statistics(norm, *, noise, level, ratio, exptime, ron, cond_names):
    """
    ``(norm, cond)`` from the image-wide background ``noise`` and ``level``.

    The part of `_resolve_inputs` after the statistics, shared with
    `astro_unet.denoise_large`, which gathers them block by block.
    """
    if norm.get("scale") == "noise":
        norm = dict(norm, scale=norm["noise_factor"] * noise)
    if norm.get("offset") == "median":
        norm = dict(norm, offset=level)
    cond = []
    for name in cond_names:
        if name == "ratio":
            cond.append(float(ratio))
        elif name == "log_exptime":
            cond.append(math.log10(exptime))
        elif name == "read_noise":
            cond.append(float(ron))
        elif name == "log_noise":
            cond.append(math.log10(noise))
        else:
            raise ValueError(f"unknown conditioning value {name!r}.")
    return norm, cond


def _network_input(electrons, *, norm, ratio, exptime, read_noise, cond_names, bad=None):
    """
    Network input for a short exposure, exactly as `denoise_ccd` builds it.

    Used by the training code so that training and inference agree.

    Parameters
    ----------
    electrons : ndarray
        Electrons collected in the short exposure (not modified).
    norm : dict
        The model's normalization.
    ratio, exptime, read_noise : float
        Exposure-time ratio, short exposure time (s; may be None when neither
        the unit nor the conditioning needs it) and read noise (electrons).
    cond_names : sequence of str
        The network's conditioning names.
    bad : ndarray of bool, optional
        Pixels to fill from their nearest good neighbour first.

    Returns
    -------
    x : float32 ndarray
        Transformed input.
    cond : float32 ndarray
        Conditioning vector.
    ctx : dict
        What `_network_target` needs to transform a target the same way.
    """
    norm = _check_normalization(norm)
    x_model = np.array(electrons, dtype=np.float64)
    if bad is not None and np.any(bad):
        _fill_bad(x_model, np.asarray(bad, dtype=bool))
    to_model = 1.0 / exptime if norm["unit"] == "electron/s" else 1.0
    x_model *= to_model
    resolved, cond, noise = _resolve_inputs(x_model, bad, norm=norm, ratio=ratio,
                                            exptime=exptime, ron=read_noise,
                                            cond_names=cond_names)
    x = _forward_transform(x_model, resolved, read_noise).astype(np.float32)
    ctx = {"norm": resolved, "ron": float(read_noise), "to_model": to_model, "noise": noise}
    return x, np.asarray(cond, dtype=np.float32), ctx


def _network_target(electrons, *, norm, ctx):
    """Transform a target (short-exposure electrons) like `_network_input` did its input."""
    x_model = np.asarray(electrons, dtype=np.float64) * ctx["to_model"]
    return _forward_transform(x_model, ctx["norm"], ctx["ron"]).astype(np.float32)


# ---------------------------------------------------------------------------
# models and devices


def _state_sha256(net):
    """sha256 of the float32 weights of an in-memory network."""
    h = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _resolve_device(device):
    import torch

    if device is None:
        device = conf.device
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        name = device.strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}."
            ) from None
    else:
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise RuntimeError(
                f"device={device!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, {build}). Use device='cpu' or 'auto'."
            )
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) present."
            )
        return torch.device("cuda", index)
    if dev.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.")
    return dev


def _prepare(net, device):
    """Put ``net`` on ``device`` in eval mode, channels_last memory format."""
    import torch

    # channels_last (NHWC) is faster on CUDA and also with oneDNN on CPUs
    # (about 1.7x for the default network on 512x512 tiles)
    net = net.to(device).eval().to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _load_by_name(spec, device):
    """Load (cached) a model given a registry name or a file path."""
    from .model import load_model_file

    name = conf.default_model if spec == "default" else os.fspath(spec)
    path = os.path.abspath(name) if os.path.isfile(name) else None
    stamp = None
    if path is not None:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
    key = (name, path, stamp, str(device))
    entry = _model_cache.get(key)
    if entry is not None:
        _model_cache.move_to_end(key)
        return entry
    try:
        from .weights import load_model
    except ImportError:  # the registry is not available: local files only
        load_model = None
    if load_model is not None:
        net, info = load_model(name, map_location="cpu")
    elif path is not None:
        net, info = load_model_file(path, map_location="cpu")
    else:
        raise ValueError(
            f"model {name!r} is not a file and no model registry is available; "
            "pass the path of a model file or an AstroUNet."
        )
    info = dict(info)
    info.setdefault("name", os.path.basename(name) if path else name)
    net = _prepare(net, device)
    entry = (net, info)
    _model_cache[key] = entry
    while len(_model_cache) > _CACHE_SIZE:
        _model_cache.popitem(last=False)
    return entry


def _resolve_model(model, device):
    """Return ``(net on device, info)`` for any accepted ``model`` value."""
    if isinstance(model, (str, os.PathLike)):
        return _load_by_name(model, device)
    from .model import AstroUNet

    info = {}
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], AstroUNet):
        model, info = model
        if not isinstance(info, dict):
            raise TypeError("model=(net, info) needs info to be a dict, as returned by load_model.")
        info = dict(info)
    if not isinstance(model, AstroUNet):
        raise TypeError(
            "model must be a registry name, a model file path, an AstroUNet or an "
            f"(AstroUNet, info) tuple; got {type(model).__name__}."
        )
    net = model
    info.setdefault("normalization", getattr(net, "normalization", None) or DEFAULT_NORMALIZATION)
    info.setdefault("metadata", getattr(net, "metadata", None) or {})
    info.setdefault("name", info["metadata"].get("name", "in-memory"))
    # the caller's module is never touched (device, memory format, flags): a
    # prepared copy is used, cached until any parameter or buffer changes
    # (tensor version counters move with every in-place update)
    tensors = list(net.parameters()) + list(net.buffers())
    stamp = tuple((t.data_ptr(), t._version) for t in tensors)
    per_device = _instance_cache.setdefault(net, {})
    entry = per_device.get(str(device))
    if entry is None or entry[0] != stamp:
        entry = (stamp, _prepare(deepcopy(net), device), _state_sha256(net))
        per_device[str(device)] = entry
    if "sha256" not in info:
        info["sha256"] = entry[2]
        info["sha_note"] = "sha256 of in-memory weights"
    return entry[1], info


def recommended_overlap(net):
    """
    Tile overlap (pixels) for ``net``: ``ERF_OVERLAP_FACTOR`` times its
    measured effective receptive-field radius, at least ``MIN_OVERLAP``,
    rounded up to a multiple of 8.  Training stores it in the model file
    (``normalization["overlap"]``) so that it is not measured at each use.
    """
    erf = _erf_cache.get(net)
    if erf is None:
        from .model import effective_receptive_field

        erf = _erf_cache[net] = effective_receptive_field(net, fraction=ERF_FRACTION)
    return 8 * math.ceil(max(MIN_OVERLAP, ERF_OVERLAP_FACTOR * erf) / 8)


def _default_overlap(net, norm):
    if norm.get("overlap") is not None:
        return int(norm["overlap"])
    return recommended_overlap(net)


def _card(value, comment):
    """(value, comment) for a FITS card: the comment is dropped if the card would be too long."""
    value = value if len(value) <= 68 else value[:65] + "..."
    if len(value) + len(comment) > 80 - 10 - 2 - 3:
        comment = ""
    return value, comment


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _read_noise_value(read_noise, norm):
    if read_noise is None:
        return float(norm.get("read_noise") or 0.0)
    if isinstance(read_noise, u.Quantity):
        try:
            read_noise = read_noise.to_value(u.electron)
        except u.UnitConversionError:
            raise u.UnitsError(
                f"read_noise must be in electrons, got {read_noise.unit}."
            ) from None
    try:
        value = float(read_noise)
    except (TypeError, ValueError):
        raise TypeError(f"read_noise must be a number of electrons, got {read_noise!r}.") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"read_noise must be a finite number >= 0, got {read_noise!r}.")
    return value


def _fill_bad(values, bad):
    """Replace ``bad`` pixels by the nearest good pixel's value (in place)."""
    from scipy import ndimage

    if bad.any():
        _, (iy, ix) = ndimage.distance_transform_edt(bad, return_indices=True)
        values[bad] = values[iy[bad], ix[bad]]
    return values


ESTIMATES = ("long", "mean")
#: Ratios more than this factor above a model's largest trained ratio raise
#: an error unless ``extrapolate=True``.
EXTRAPOLATION_LIMIT = 2.0


def _trained_ratios(info):
    """``(lo, hi)``: the ratios a model was trained on (None when it does not say)."""
    ratios = (info.get("metadata") or {}).get("ratios")
    values = []
    if isinstance(ratios, dict):
        values = list(ratios.get("values") or []) + list(ratios.get("range") or [])
    elif isinstance(ratios, (list, tuple)):
        values = list(ratios)
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return (min(values), max(values)) if values else None


def _check_ratio_range(ratio, info, *, extrapolate, call):
    """Warn outside the model's trained ratios; refuse far above them unless ``extrapolate``."""
    import warnings

    from astropy.utils.exceptions import AstropyUserWarning

    span = _trained_ratios(info)
    if span is None:
        return
    lo, hi = span
    if ratio > EXTRAPOLATION_LIMIT * hi and not extrapolate:
        raise ValueError(
            f"{call}: ratio={ratio:g} is more than {EXTRAPOLATION_LIMIT:g} times the largest "
            f"ratio the model was trained on ({hi:g}); its output would be an "
            f"extrapolation.  Pass extrapolate=True to run it anyway.")
    if not lo <= ratio <= hi:
        warnings.warn(f"{call}: ratio={ratio:g} is outside the ratios the model was trained "
                      f"on ({lo:g} to {hi:g}); check the result.", AstropyUserWarning)


def _saturation_level(ccd, saturation):
    """
    Saturation level in the data's unit, or None.

    ``saturation`` None: the ``SATURATE`` keyword of a counts image (not of a
    rate image, whose scale a header value rarely matches); False: none.
    """
    if saturation is False:
        return None
    if saturation is None:
        if _validation.is_rate(ccd.unit) or "SATURATE" not in (ccd.meta or {}):
            return None
        value = ccd.meta["SATURATE"]
        value = value[0] if isinstance(value, tuple) else value
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) and value > 0 else None
    if isinstance(saturation, u.Quantity):
        try:
            saturation = saturation.to_value(ccd.unit)
        except u.UnitConversionError:
            raise u.UnitsError(f"saturation must be in the image's unit ({ccd.unit}), got "
                               f"{saturation.unit}.") from None
    if isinstance(saturation, bool):
        raise TypeError("saturation must be a number, None or False, got True.")
    try:
        value = float(saturation)
    except (TypeError, ValueError):
        raise TypeError(f"saturation must be a number, None or False, got "
                        f"{saturation!r}.") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"saturation must be a finite number > 0, got {saturation!r}.")
    return value


#: The network's estimate may not move the median pixel by more than this many
#: background sigmas of the input (a sign of a ratio or input far outside training).
MAX_MEDIAN_SHIFT = 100.0


def _check_output(result, x_out, bad, *, ratio, unit_scale, noise=None):
    """
    Refuse a network output that is not finite or whose median departs from
    the input's by more than `MAX_MEDIAN_SHIFT` times the larger of the
    background sigma and the network's own unit (``unit_scale``, the
    normalization scale in the output unit), and more than the input's median
    level itself.  ``noise`` is the input's background sigma in the output
    unit when the caller already measured it.
    """
    good = ~bad
    d = np.asarray(result, dtype=np.float64)[good]
    x = np.asarray(x_out, dtype=np.float64)[good]
    if d.size > 4_000_000:
        step = d.size // 2_000_000
        d, x = d[::step], x[::step]
    shift = np.median(d - x) if d.size else 0.0
    level = abs(np.median(x)) if d.size else 0.0
    if noise is None:
        noise = _background_noise(x_out, bad) if d.size else 0.0
    limit = max(MAX_MEDIAN_SHIFT * max(noise, unit_scale), level)
    if not np.all(np.isfinite(d)) or abs(shift) > limit:
        raise RuntimeError(
            f"the network's output is not usable (median shift {shift:.3g} against a "
            f"background noise of {noise:.3g} in the output unit, at ratio={ratio:g}): the "
            "ratio or the image is far outside what the model was trained on.")


def _long_exposure_factor(mean, *, ratio, noise, level, ron, factor):
    """
    Per-pixel scale ``alpha`` of the input noise in a real exposure ``ratio`` times longer.

    All values in the output unit; ``factor`` converts short-exposure
    electrons to it.  The input's variance is the background noise squared
    (sky, dark and read noise) plus the Poisson variance of the flux above
    the background level, ``noise**2 + max(mean - level, 0) * factor``.  In
    the long exposure the Poisson part grows ``ratio`` times and the read
    noise does not, so that, in the units of the short exposure, its variance
    is ``poisson / ratio + ron**2 / ratio**2``; ``alpha`` is the square root of
    their quotient: ``1 / sqrt(ratio)`` without read noise, down to
    ``1 / ratio`` when the read noise dominates (a read noise above the
    measured noise counts as equal to it).  Returns ``(alpha, var_in)``.
    """
    with np.errstate(invalid="ignore"):
        source = np.clip(mean - level, 0.0, None) * factor
    ron = min(ron, noise)          # measured below the read noise: correlated noise
    var_in = noise ** 2 + source
    var_poisson = noise ** 2 - ron ** 2 + source
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.sqrt((var_poisson / ratio + ron ** 2 / ratio ** 2) / var_in)
    alpha = np.clip(np.nan_to_num(alpha, nan=1.0 / math.sqrt(ratio)), 1.0 / ratio,
                    1.0 / math.sqrt(ratio))
    return alpha, var_in


def _finish_output(result, sigma, x_out, *, ratio, estimate, bad, saturated, noise, level,
                   ron, factor, model_sigma):
    """
    The output the caller asked for, in place (``result`` holds the mean estimate).

    ``x_out`` is the input in the output's unit; ``noise``, ``level`` and
    ``ron`` are its background noise, background level and the read noise in
    the same unit, ``factor`` converts short-exposure electrons to it.
    ``estimate="long"`` adds the input's own noise back, scaled to the level
    of a real exposure ``ratio`` times longer: ``d + alpha (x - d)``
    (`_long_exposure_factor`; bad pixels keep ``d``), and ``sigma`` becomes
    the noise of that exposure, plus ``(1 - alpha)`` times the network's own
    error where the model has an uncertainty head (``model_sigma``).
    Saturated pixels take the input's value (a lower limit); the caller
    masks them.
    """
    if estimate == "long":
        good = ~bad
        d = result[good]
        alpha, var_in = _long_exposure_factor(d, ratio=ratio, noise=noise, level=level,
                                              ron=ron, factor=factor)
        result[good] = d + alpha * (x_out[good] - d)
        var = alpha ** 2 * var_in
        if model_sigma:
            var = var + ((1.0 - alpha) * sigma[good]) ** 2
        sigma[good] = np.sqrt(var)
    if saturated is not None and saturated.any():
        result[saturated] = x_out[saturated]


def _autocast(device):
    """Mixed precision on CUDA as `AUTOCAST_DTYPE` says; none on CPU."""
    import contextlib

    import torch

    choice = AUTOCAST_DTYPE
    if device.type != "cuda" or choice in (None, "float32"):
        return contextlib.nullcontext()
    if choice == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif choice in ("bfloat16", "float16"):
        dtype = getattr(torch, choice)
    else:
        raise ValueError(f"AUTOCAST_DTYPE must be 'auto', 'bfloat16', 'float16' or None, "
                         f"got {choice!r}.")
    return torch.autocast("cuda", dtype=dtype)


def _forward_batch(net, x, cond_t):
    """Run ``net`` on a batch (N, 1, h, w) already on its device."""
    import torch

    x = x.contiguous(memory_format=torch.channels_last)
    c = None if cond_t is None else cond_t.expand(x.shape[0], -1)
    with torch.inference_mode(), _autocast(x.device):
        return net(x, c).float()


def _cond_tensor(cond, device):
    import torch

    return torch.tensor([cond], dtype=torch.float32, device=device) if cond else None


def _engine_numpy(x_model, net, device, cond, *, norm, ron, tile_size, overlap, batch_size,
                  mode, progress, post, dtype):
    """Host engine: numpy transforms, `process_tiles` blending (CPU default)."""
    import torch

    # float32 like the network; the output side works in the output's dtype
    net_in = _forward_transform(x_model.astype(np.float32), norm, ron)
    net_in = net_in.astype(np.float32, copy=False)
    cond_t = _cond_tensor(cond, device)

    def run(tiles):
        x = torch.from_numpy(tiles).unsqueeze(1).to(device)
        return _forward_batch(net, x, cond_t).cpu().numpy()

    out = process_tiles(net_in, run, tile_size=tile_size, overlap=overlap,
                        batch_size=batch_size, size_multiple=net.size_multiple, mode=mode,
                        progress=progress)
    del net_in
    out = out.astype(dtype, copy=False)
    result, sigma = _network_to_output(out, norm=norm, ron=ron, **post)
    return result.astype(dtype, copy=False), sigma.astype(dtype, copy=False)


def _engine_torch(x_model, net, device, cond, *, norm, ron, tile_size, overlap, batch_size,
                  mode, progress, post, dtype):
    """
    Device-resident engine (CUDA default): the image goes to the device once;
    transform, tiles, feathered blending (same plan and windows as
    `astro_unet.tiling.process_tiles`) and the inverse transform run there.
    """
    import torch

    from .tiling import _Progress, feather_window, pad_for_plan, plan_tiles

    ops = _torch_ops()
    plan = plan_tiles(x_model.shape, tile_size=tile_size, overlap=overlap,
                      size_multiple=net.size_multiple, fit=mode == "feather")
    x = pad_for_plan(np.asarray(x_model, dtype=np.float32), plan)
    x = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    net_in = _forward_transform(x, norm, ron, ops)
    del x
    cond_t = _cond_tensor(cond, device)
    th, tw = plan.tile_shape
    ny, nx = plan.padded_shape
    accum = None
    weight_sum = torch.zeros((ny, nx), dtype=torch.float32, device=device)
    windows = {}
    origins = plan.origins
    last_y, last_x = plan.y_starts[-1], plan.x_starts[-1]
    bar = _Progress(len(origins), progress, "astro_unet tiles")
    try:
        for b0 in range(0, len(origins), batch_size):
            chunk = origins[b0:b0 + batch_size]
            tiles = torch.stack([net_in[y:y + th, x:x + tw] for y, x in chunk])[:, None]
            pred = _forward_batch(net, tiles, cond_t)
            if accum is None:
                accum = torch.zeros((pred.shape[1], ny, nx), dtype=torch.float32, device=device)
            for (y, x), p in zip(chunk, pred):
                if mode == "paper":
                    accum[:, y:y + th, x:x + tw] += p
                    weight_sum[y:y + th, x:x + tw] += 1.0
                    continue
                sides = (y > 0, y < last_y, x > 0, x < last_x)
                w = windows.get(sides)
                if w is None:
                    w = windows[sides] = torch.from_numpy(
                        feather_window((th, tw), plan.overlap, sides=sides)).float().to(device)
                accum[:, y:y + th, x:x + tw] += w * p
                weight_sum[y:y + th, x:x + tw] += w
            bar.update(len(chunk))
    finally:
        bar.close()
    del net_in
    (top, bottom), (left, right) = plan.pad
    out = (accum / weight_sum)[:, top:ny - bottom, left:nx - right].double()
    del accum, weight_sum
    result, sigma = _network_to_output(out, norm=norm, ron=ron, ops=ops, **post)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    return result.to(tdtype).cpu().numpy(), sigma.to(tdtype).cpu().numpy()


ENGINES = {"numpy": _engine_numpy, "torch": _engine_torch}
#: Engine used per device type (``"numpy"``: host blending with
#: `astro_unet.tiling.process_tiles`; ``"torch"``: everything on the device).
DEFAULT_ENGINE = {"cpu": "numpy", "cuda": "torch"}


def _run_engine(engine, x_model, net, device, cond, *, tile_size, overlap, batch_size,
                mode, **kwargs):
    """Run an engine, retrying with smaller batches/tiles on CUDA out-of-memory."""
    import torch

    multiple = net.size_multiple
    while True:
        try:
            result = ENGINES[engine](x_model, net, device, cond, tile_size=tile_size,
                                     overlap=overlap, batch_size=batch_size, mode=mode,
                                     **kwargs)
            return result, tile_size, batch_size
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if batch_size > 1:
                batch_size //= 2
            elif mode == "feather" and tile_size // 2 >= max(2 * overlap, 2 * multiple):
                tile_size = max(multiple, tile_size // 2 // multiple * multiple)
            else:
                raise
            log.warning(f"denoise_ccd: CUDA out of memory, retrying with "
                        f"batch_size={batch_size}, tile_size={tile_size}.")


def _tiling_parameters(shape, net, norm, dev, *, tile_size, overlap, batch_size, mode):
    """Tile side, overlap and batch size for an image of ``shape`` (see `denoise_ccd`)."""
    multiple = net.size_multiple
    if overlap is not None and (isinstance(overlap, bool)
                                or not isinstance(overlap, (int, np.integer)) or overlap < 0):
        raise ValueError(f"overlap must be a non-negative integer, got {overlap!r}.")
    if tile_size is None:
        if mode == "paper":
            tile = PAPER_TILE_SIZE
        else:
            tile = conf.tile_size or norm.get("tile_size")
            if not tile:
                # a wide receptive field needs a wide overlap: tiles grow with it, so
                # that the overlap (computed twice) stays a small part of the work
                ov_hint = _default_overlap(net, norm) if overlap is None else int(overlap)
                tile = max(DEFAULT_TILE_SIZE[dev.type], TILE_PER_OVERLAP * ov_hint)
    else:
        tile = tile_size
    tile = _positive_int(tile, "tile_size")
    # a tile is never larger than the (padded) image, nor than MAX_TILE_SIZE
    tile = min(tile, multiple * math.ceil(max(shape) / multiple))
    if tile > MAX_TILE_SIZE:
        log.info(f"denoise_ccd: tile_size {tile} reduced to {MAX_TILE_SIZE}.")
        tile = MAX_TILE_SIZE
    tile = max(multiple, tile // multiple * multiple)
    if overlap is None:
        if mode == "paper":
            ov = max(0, tile - PAPER_STEP)
        else:
            ov = min(_default_overlap(net, norm), tile // 2)
    else:
        ov = int(overlap)
    if batch_size is None:
        batch_size = conf.batch_size or DEFAULT_BATCH_SIZE[dev.type]
    batch_size = _positive_int(batch_size, "batch_size")
    return tile, ov, batch_size


def _record_denoise(meta, call, *, info, ratio, tile, overlap, mode, device, uncert_kind,
                    noise, to_model, exptime, estimate, n_saturated=None):
    """Write the ``DN*`` keywords, the ``HISTORY`` line and ``EXPTIME = t r`` into ``meta``."""
    metadata = info.get("metadata") or {}
    version = metadata.get("version", info.get("format_version", "unknown"))
    sha = str(info.get("sha256", "unknown"))
    keywords = {
        "DNMODEL": _card(str(info.get("name", "unknown")), "astro_unet model name"),
        "DNVER": _card(str(version), "model version"),
        "DNSHA256": _card(sha, ""),
        "DNSHAOF": ("weights" if info.get("sha_note") else "file",
                    "DNSHA256 of the model file or of its weights"),
        "DNRATIO": (ratio, "exposure-time ratio r of denoise_ccd"),
        "DNESTIM": (estimate, "long: noise of a real long exposure; mean"),
        "DNTILE": (int(tile), "[px] tile size"),
        "DNOVERLP": (int(overlap), "[px] minimum tile overlap"),
        "DNMODE": (mode, "tile blending (feather or paper)"),
        "DNDEVICE": (device.type, "torch device type used"),
        "DNUNCERT": (uncert_kind, "origin of the output uncertainty"),
    }
    if n_saturated is not None:
        keywords["DNNSAT"] = (n_saturated, "saturated input pixels, masked")
    if noise is not None:
        keywords["DNNOISE"] = (float(f"{noise / to_model:.6g}"),
                               "[e-] background noise of the input")
    log_step(meta, f"{call}(ratio={ratio:g}, model={keywords['DNMODEL'][0]!r}, "
                   f"estimate={estimate!r}, mode={mode!r})", keywords)
    if exptime is not None:
        keys = [k for k in _validation.EXPTIME_KEYWORDS if k in meta] or ["EXPTIME"]
        for key in keys:
            set_keyword(meta, key, exptime * ratio, "[s] short exposure x DNRATIO")
    return meta


def denoise_ccd(ccd, *, ratio, model="default", estimate="long", device=None, tile_size=None,
                overlap=None, batch_size=None, progress=False, exposure_time=None, gain=None,
                read_noise=None, saturation=None, mode="feather", extrapolate=False):
    """
    Make a short exposure look like one ``ratio`` times longer (Astro U-net).

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData` or `~astropy.nddata.NDData`
        2-D image in electron, electron/s, adu or adu/s (adu needs a gain).
        Masked and non-finite pixels are filled before the network and masked
        in the output.
    ratio : float
        Exposure-time ratio ``r > 1`` of the wanted (long) to the actual
        (short) exposure.  Required.  A ratio outside the ratios the model
        was trained on gives an `~astropy.utils.exceptions.AstropyUserWarning`;
        one more than twice the largest of them an error (see
        ``extrapolate``).
    model : str, path-like, `~astro_unet.model.AstroUNet` or tuple
        ``"default"`` (``astro_unet.conf.default_model``), a registry name,
        the path of a model file, a network, or ``(network, info)`` as
        returned by ``load_model``.  A network without a ``normalization``
        attribute uses ``DEFAULT_NORMALIZATION``.  Loaded models are cached
        (the 4 most recent per name, file and device).
    estimate : {"long", "mean"}
        ``"long"`` (default): an image like a real exposure ``r`` times
        longer, ``d + alpha (x - d)`` for the network's estimate ``d`` and
        the input ``x``: the input's own noise, scaled to the level of the
        long exposure (``alpha = 1/sqrt(r)`` without read noise, down to
        ``1/r`` where the read noise dominates), stays (white, with the
        right rms), so detection at the image's own rms behaves as on a
        real long exposure.
        ``"mean"``: the network's expected value ``d`` alone, whose
        background is much quieter than any real exposure.  See
        :ref:`estimates`.
    device : str or `torch.device`, optional
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``; default ``astro_unet.conf.device`` (``"auto"``).
    tile_size : int, optional
        Largest tile side in pixels (default ``conf.tile_size`` if set, else
        the model's recommendation, else 512 on CPU / 1024 on CUDA or 6 times
        the overlap if larger; 256 in paper mode).  Reduced to the image size
        and to at most 2048.
    overlap : int, optional
        Minimum tile overlap in pixels (default: the model's recommendation,
        else 4 times its effective receptive-field radius, at least 32;
        ``tile_size - 32`` in paper mode).
    batch_size : int, optional
        Tiles per forward pass (default ``conf.batch_size`` if set, else 1 on
        CPU, 8 on CUDA).  Memory grows with ``batch_size * tile_size**2``.
    progress : bool
        Show a progress bar (tqdm if installed, else lines on stderr).
    exposure_time : float or `~astropy.units.Quantity`, optional
        Short exposure time (s); default the ``EXPTIME`` keyword.  Needed for
        rate units and for models conditioned on the exposure time.
    gain : float or `~astropy.units.Quantity`, optional
        electron / adu for adu images; default the ``GAIN`` keyword.
    read_noise : float or `~astropy.units.Quantity`, optional
        Read noise in electrons, for the Anscombe transform, a ``read_noise``
        conditioning value and the uncertainty estimate; default the model's
        ``normalization["read_noise"]``, else 0.
    saturation : float, `~astropy.units.Quantity` or False, optional
        Saturation level in the image's unit: pixels at or above it are
        masked in the output and keep the input's value (scaled to the
        output unit; a lower limit), instead of a network guess.  Default:
        the ``SATURATE`` keyword of a counts image (electron or adu); False:
        none.
    mode : {"feather", "paper"}
        ``"feather"``: overlapping tiles with feathered blending;
        ``"paper"``: the paper's mosaic (256 px tiles moved by 32 px, plain
        average; about 64 times more computation).
    extrapolate : bool
        Run ratios more than twice the largest the model was trained on
        (default: `ValueError`).

    Returns
    -------
    result : same class as ``ccd``
        The denoised image, in the input's unit (counts units: counts of the
        long exposure, see the module docstring), with WCS and header of the
        input, ``EXPTIME`` multiplied by ``ratio``, mask = input mask |
        non-finite input | saturated input, and a
        `~astropy.nddata.StdDevUncertainty` from the model
        (``DNUNCERT='model'``) or the Poisson estimate of a long exposure
        (``DNUNCERT='poisson-estimate'``).  Header keywords: ``DNMODEL,
        DNVER, DNSHA256, DNSHAOF, DNRATIO, DNESTIM, DNTILE, DNOVERLP, DNMODE,
        DNDEVICE, DNUNCERT, DNNSAT`` and a ``HISTORY`` line.

    Raises
    ------
    TypeError
        ``ratio`` missing or not a number, ``ccd`` not NDData, bad ``model``.
    ValueError
        Not 2-D, no usable pixel, ``ratio <= 1`` or NaN, a ratio far beyond
        the model's training without ``extrapolate``, bad sizes, mode,
        estimate or saturation, missing exposure time or gain where needed.
    astropy.units.UnitsError
        No unit or a unit that cannot be converted to electrons.
    RuntimeError
        CUDA requested but not available; the network's output is not finite
        or its median departs from the input's by more than 100 background
        sigmas and the median level (a ratio or an image far outside the
        model's training).
    astro_unet.model.ModelFileError
        The model file is corrupt or not a model file.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from astro_unet import denoise_ccd
    >>> from astro_unet.model import AstroUNet
    >>> net = AstroUNet(base_channels=4, depth=3, residual=True)
    >>> rng = np.random.default_rng(0)
    >>> ccd = CCDData(rng.poisson(50.0, (64, 64)).astype(float), unit="electron",
    ...               meta={"EXPTIME": 100.0})
    >>> out = denoise_ccd(ccd, ratio=2, model=net, device="cpu")
    >>> out.shape, out.unit, out.meta["EXPTIME"], out.meta["DNESTIM"]
    ((64, 64), Unit("electron"), 200.0, 'long')
    """
    r = _validation.validate_ratio(ratio)
    data = _validation.validate_ccd(ccd)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if estimate not in ESTIMATES:
        raise ValueError(f"estimate must be one of {ESTIMATES}, got {estimate!r}.")
    if progress not in (True, False):
        raise TypeError(f"progress must be True or False, got {progress!r}.")
    if extrapolate not in (True, False):
        raise TypeError(f"extrapolate must be True or False, got {extrapolate!r}.")
    sat_level = _saturation_level(ccd, saturation)

    dev = _resolve_device(device)
    net, info = _resolve_model(model, dev)
    _check_ratio_range(r, info, extrapolate=extrapolate, call="denoise_ccd")
    norm = _check_normalization(info.get("normalization") or DEFAULT_NORMALIZATION)
    cfg = net.config
    if cfg.in_channels != 1:
        raise ValueError(
            f"denoise_ccd needs a network with 1 input channel, got {cfg.in_channels}.")
    from .model import KNOWN_CONDITIONS

    unknown = [n for n in cfg.cond_names if n not in KNOWN_CONDITIONS]
    if unknown:
        raise ValueError(f"the model asks for unknown conditioning values {unknown}.")

    need_time = norm["unit"] == "electron/s" or "log_exptime" in cfg.cond_names
    scale, exptime = _validation.electron_scale(
        ccd, exposure_time=exposure_time, gain=gain, need_time=need_time)
    if need_time and exptime is None:
        exptime = _validation.get_exposure_time(ccd, exposure_time, required=True)
    ron = _read_noise_value(read_noise, norm)
    rate = _validation.is_rate(ccd.unit)

    tile, ov, batch_size = _tiling_parameters(data.shape, net, norm, dev, tile_size=tile_size,
                                              overlap=overlap, batch_size=batch_size,
                                              mode=mode)

    # --- pixels into the network's space
    nonfinite = ~np.isfinite(data)
    bad = nonfinite if ccd.mask is None else nonfinite | np.asarray(ccd.mask, dtype=bool)
    saturated = None
    if sat_level is not None:
        with np.errstate(invalid="ignore"):
            saturated = data >= sat_level
    electrons = data                         # a float64 copy made by validate_ccd
    electrons *= scale                       # electrons in the short exposure
    _fill_bad(electrons, bad)
    to_model = 1.0 / exptime if norm["unit"] == "electron/s" else 1.0
    if to_model != 1.0:
        electrons *= to_model
    x_model = electrons
    del electrons, data
    _validation.check_magnitude(x_model, unit=norm["unit"])  # float32 network: no inf/NaN

    norm, cond, noise = _resolve_inputs(x_model, bad, norm=norm, ratio=r, exptime=exptime,
                                        ron=ron, cond_names=cfg.cond_names)

    # counts: the output is the long exposure (x r); rates stay rates
    factor = (1.0 if rate else r) / scale    # electrons (short) -> output unit
    post = dict(ratio=r, to_model=to_model, factor=factor)
    # float32 images stay float32; everything else becomes float64
    out_dtype = _validation.output_dtype(ccd)
    (result, sigma), tile, batch_size = _run_engine(
        DEFAULT_ENGINE[dev.type], x_model, net, dev, cond, norm=norm, ron=ron,
        tile_size=tile, overlap=ov, batch_size=batch_size, mode=mode, progress=progress,
        post=post, dtype=out_dtype)
    noise_bg = _background_noise(x_model, bad) if noise is None else noise
    level = _background_level(x_model, bad)
    x_model *= factor / to_model             # the input in the output unit
    _check_output(result, x_model, bad, ratio=r,
                  unit_scale=float(norm.get("scale") or 1.0) * factor / to_model,
                  noise=noise_bg * factor / to_model)
    _finish_output(result, sigma, x_model, ratio=r, estimate=estimate, bad=bad,
                   saturated=saturated, noise=noise_bg * factor / to_model,
                   level=level * factor / to_model, ron=ron * factor, factor=factor,
                   model_sigma=cfg.out_channels == 2)
    del x_model
    uncert_kind = "model" if cfg.out_channels == 2 else "poisson-estimate"
    if nonfinite.any():
        result[nonfinite] = np.nan
        sigma[nonfinite] = np.nan
    if saturated is not None:
        bad = bad | saturated

    # --- metadata
    meta = deepcopy(ccd.meta)
    _record_denoise(meta, "denoise_ccd", info=info, ratio=r, tile=tile, overlap=ov, mode=mode,
                    device=dev, uncert_kind=uncert_kind, noise=noise, to_model=to_model,
                    exptime=exptime, estimate=estimate,
                    n_saturated=None if saturated is None else int(saturated.sum()))

    return _validation.new_like(ccd, result, uncertainty=StdDevUncertainty(sigma),
                                mask=bad, meta=meta)
