# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Running the network: devices, model loading and caches, tile sizes, the tile engines.

`resolve_device` and `resolve_model` turn the ``device=`` and ``model=``
arguments into a prepared network (cached); `tiling_parameters` chooses the
tile side, overlap and batch size; an engine (`ENGINES`) runs the network
over the tiles of an image and returns the denoised image and its standard
deviation; `run_engine` retries after a CUDA out-of-memory error.  See
:ref:`architecture` for where to add an engine.
"""

import collections
import contextlib
import hashlib
import math
import os
import weakref
from copy import deepcopy

import numpy as np
from astropy import log

from . import _validation
from ._config import conf
from ._normalization import DEFAULT_NORMALIZATION, forward_transform, network_to_output, torch_ops
from .tiling import PAPER_STEP, PAPER_TILE_SIZE, process_tiles

__all__ = []  # private module: public names for astro_unet's own modules

#: Default tile side per device type (pixels).
DEFAULT_TILE_SIZE = {"cpu": 512, "cuda": 1024}
#: Default number of tiles per forward pass per device type.
DEFAULT_BATCH_SIZE = {"cpu": 1, "cuda": 8}
#: Largest tile side accepted (larger requests are reduced to this).
MAX_TILE_SIZE = 2048
#: Default tiles are at least this many times the overlap (up to MAX_TILE_SIZE).
TILE_PER_OVERLAP = 6
#: Smallest default overlap (pixels).
MIN_OVERLAP = 32
#: Fraction of the gradient enclosed by the effective receptive field.
ERF_FRACTION = 0.99
#: Default overlap = this many effective receptive-field radii (at least MIN_OVERLAP).
ERF_OVERLAP_FACTOR = 4

CACHE_SIZE = 4
model_cache = collections.OrderedDict()
erf_cache = weakref.WeakKeyDictionary()
instance_cache = weakref.WeakKeyDictionary()


def state_sha256(net):
    """sha256 of the float32 weights of an in-memory network."""
    h = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def resolve_device(device):
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


def prepare(net, device):
    """Put ``net`` on ``device`` in eval mode, channels_last memory format."""
    import torch

    # channels_last (NHWC) is faster on CUDA and also with oneDNN on CPUs
    # (about 1.7x for the default network on 512x512 tiles)
    net = net.to(device).eval().to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_by_name(spec, device):
    """Load (cached) a model given a registry name or a file path."""
    from .model import load_model_file

    name = conf.default_model if spec == "default" else os.fspath(spec)
    path = os.path.abspath(name) if os.path.isfile(name) else None
    stamp = None
    if path is not None:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
    key = (name, path, stamp, str(device))
    entry = model_cache.get(key)
    if entry is not None:
        model_cache.move_to_end(key)
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
    net = prepare(net, device)
    entry = (net, info)
    model_cache[key] = entry
    while len(model_cache) > CACHE_SIZE:
        model_cache.popitem(last=False)
    return entry


def resolve_model(model, device):
    """Return ``(net on device, info)`` for any accepted ``model`` value."""
    if isinstance(model, (str, os.PathLike)):
        return load_by_name(model, device)
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
    per_device = instance_cache.setdefault(net, {})
    entry = per_device.get(str(device))
    if entry is None or entry[0] != stamp:
        entry = (stamp, prepare(deepcopy(net), device), state_sha256(net))
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
    erf = erf_cache.get(net)
    if erf is None:
        from .model import effective_receptive_field

        erf = erf_cache[net] = effective_receptive_field(net, fraction=ERF_FRACTION)
    return 8 * math.ceil(max(MIN_OVERLAP, ERF_OVERLAP_FACTOR * erf) / 8)


def resolve(model, device):
    """``(device, net, info)`` for the ``model=`` and ``device=`` arguments of `denoise_ccd`."""
    dev = resolve_device(device)
    net, info = resolve_model(model, dev)
    return dev, net, info


def default_overlap(net, norm):
    if norm.get("overlap") is not None:
        return int(norm["overlap"])
    return recommended_overlap(net)


def autocast(device):
    """Mixed precision on CUDA as ``astro_unet.conf.autocast`` says; none on CPU."""
    import torch

    from ._config import conf

    choice = conf.autocast
    choice = "none" if choice is None else str(choice).lower()
    if device.type != "cuda" or choice in ("none", "float32"):
        return contextlib.nullcontext()
    if choice == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif choice in ("bfloat16", "float16"):
        dtype = getattr(torch, choice)
    else:
        raise ValueError(f"astro_unet.conf.autocast must be 'auto', 'bfloat16', 'float16' or "
                         f"'none', got {conf.autocast!r}.")
    return torch.autocast("cuda", dtype=dtype)


def forward_batch(net, x, cond_t):
    """Run ``net`` on a batch (N, 1, h, w) already on its device."""
    import torch

    x = x.contiguous(memory_format=torch.channels_last)
    c = None if cond_t is None else cond_t.expand(x.shape[0], -1)
    with torch.inference_mode(), autocast(x.device):
        return net(x, c).float()


def cond_tensor(cond, device):
    import torch

    return torch.tensor([cond], dtype=torch.float32, device=device) if cond else None


def host_predictor(net, device, cond_t):
    """
    ``func`` of `~astro_unet.tiling.blend_tiles` on the host: numpy tiles in, numpy out.

    Parameters
    ----------
    net : `~astro_unet.model.AstroUNet`
        The prepared network.
    device : `torch.device`
        Its device.
    cond_t : `torch.Tensor` or None
        Conditioning values (`cond_tensor`).
    """
    import torch

    def run(tiles):
        x = torch.from_numpy(tiles).unsqueeze(1).to(device)
        return forward_batch(net, x, cond_t).cpu().numpy()

    return run


def host_output(out, *, norm, ron, post, dtype):
    """
    Blended network output ``(C, h, w)`` (numpy) -> ``(image, sigma)`` of ``dtype``.

    `~astro_unet._normalization.network_to_output` in the output's dtype.
    """
    out = out.astype(dtype, copy=False)
    result, sigma = network_to_output(out, norm=norm, ron=ron, **post)
    return result.astype(dtype, copy=False), sigma.astype(dtype, copy=False)


def engine_numpy(x_model, net, device, cond, *, norm, ron, tile_size, overlap, batch_size,
                 mode, progress, post, dtype):
    """Host engine: numpy transforms, `~astro_unet.tiling.process_tiles` blending (CPU)."""
    # float32 like the network; the output side works in the output's dtype
    net_in = forward_transform(x_model.astype(np.float32), norm, ron)
    net_in = net_in.astype(np.float32, copy=False)
    run = host_predictor(net, device, cond_tensor(cond, device))
    out = process_tiles(net_in, run, tile_size=tile_size, overlap=overlap,
                        batch_size=batch_size, size_multiple=net.size_multiple, mode=mode,
                        progress=progress)
    del net_in
    return host_output(out, norm=norm, ron=ron, post=post, dtype=dtype)


def engine_torch(x_model, net, device, cond, *, norm, ron, tile_size, overlap, batch_size,
                 mode, progress, post, dtype):
    """
    Device-resident engine (CUDA default): the image goes to the device once;
    transform, tiles, blending (`~astro_unet.tiling.blend_tiles` with torch
    arrays: the same plan, windows and loop as on the host, in float32) and
    the inverse transform run there.
    """
    import torch

    from .tiling import TorchTiles, blend_tiles, crop_padding, pad_for_plan, plan_tiles

    ops = torch_ops()
    plan = plan_tiles(x_model.shape, tile_size=tile_size, overlap=overlap,
                      size_multiple=net.size_multiple, fit=mode == "feather")
    x = pad_for_plan(np.asarray(x_model, dtype=np.float32), plan)
    x = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    net_in = forward_transform(x, norm, ron, ops)
    del x
    cond_t = cond_tensor(cond, device)
    accum = blend_tiles(net_in, plan, lambda tiles: forward_batch(net, tiles[:, None], cond_t),
                        batch_size=batch_size, mode=mode, xp=TorchTiles(device),
                        progress=progress)
    del net_in
    out = crop_padding(accum, plan).double()
    del accum
    result, sigma = network_to_output(out, norm=norm, ron=ron, ops=ops, **post)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    return result.to(tdtype).cpu().numpy(), sigma.to(tdtype).cpu().numpy()


ENGINES = {"numpy": engine_numpy, "torch": engine_torch}
#: Engine used per device type (``"numpy"``: host blending with
#: `astro_unet.tiling.process_tiles`; ``"torch"``: everything on the device).
DEFAULT_ENGINE = {"cpu": "numpy", "cuda": "torch"}


def run_engine(engine, x_model, net, device, cond, *, tile_size, overlap, batch_size,
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


def tiling_parameters(shape, net, norm, dev, *, tile_size, overlap, batch_size, mode):
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
                ov_hint = default_overlap(net, norm) if overlap is None else int(overlap)
                tile = max(DEFAULT_TILE_SIZE[dev.type], TILE_PER_OVERLAP * ov_hint)
    else:
        tile = tile_size
    tile = _validation.positive_int(tile, "tile_size")
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
            ov = min(default_overlap(net, norm), tile // 2)
    else:
        ov = int(overlap)
    if batch_size is None:
        batch_size = conf.batch_size or DEFAULT_BATCH_SIZE[dev.type]
    batch_size = _validation.positive_int(batch_size, "batch_size")
    return tile, ov, batch_size
