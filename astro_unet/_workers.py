# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The model on Dask workers: checked before the tasks start, loaded once per process.

Shared by `astro_unet.files` and `astro_unet.large`.
"""

import os
import threading

__all__ = []  # private module

_LOAD_LOCK = threading.Lock()


def prepared_model(model, device, *, measure_overlap=True):
    """
    ``(device, net, info)`` with the model loaded at most once per process.

    Names and paths go through the model cache of `astro_unet._inference`
    (what `denoise_ccd` looks up), networks through its per-instance cache;
    the lock makes concurrent worker threads wait for the first load instead
    of loading again.  The network's receptive field (default overlap) is
    measured here too, once.
    """
    from . import _inference
    from ._normalization import DEFAULT_NORMALIZATION, check_normalization

    dev = _inference.resolve_device(device)
    with _LOAD_LOCK:
        net, info = _inference.resolve_model(model, dev)
        if measure_overlap:
            norm = check_normalization(info.get("normalization") or DEFAULT_NORMALIZATION)
            _inference.default_overlap(net, norm)
    return dev, net, info


def check_model_spec(model):
    """
    The model as the workers should get it, failing early (before any task)
    for a name or file that cannot exist: ``"default"`` resolved here (the
    workers may not share this session's configuration), registered models
    downloaded into the cache once, files as absolute paths.
    """
    if not isinstance(model, (str, os.PathLike)):
        return model
    from . import weights

    target = model
    if isinstance(target, str) and target == "default":
        target = weights.default_target()  # raises when there is no default
    if isinstance(target, str) and target in weights.REGISTRY:
        weights.get_model_path(target)      # download into the cache once, here
        return target
    path = os.path.expanduser(os.fspath(target))
    if not os.path.isfile(path):
        if isinstance(target, str) and not weights.looks_like_path(target):
            weights.lookup(target)
        raise FileNotFoundError(f"Model file {path} does not exist.")
    return os.path.abspath(path)
