# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Pixels into and out of the network's space: normalization, transforms, image statistics.

The normalization dict of a model file (:ref:`normalization`), the forward
and inverse transforms (numpy or torch arrays), the image-wide statistics
that noise-scaled normalizations and conditioning values need, and
`network_input` / `network_target`, with which the training code builds its
pairs exactly as `~astro_unet.denoise_ccd` builds its input.
"""

import math

import numpy as np
import astropy.units as u

from . import _validation

__all__ = []  # private module: public names for astro_unet's own modules

#: Normalization of the package's default models (see :ref:`normalization`).
DEFAULT_NORMALIZATION = {"unit": "electron", "transform": "asinh", "scale": 10.0}

TRANSFORMS = ("asinh", "anscombe", "linear")


def check_normalization(norm):
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


class ArrayOps:
    """
    The array functions of the transforms, from numpy or torch.

    Parameters
    ----------
    xp : module
        `numpy` or `torch`, for ``sinh, cosh, sqrt, exp, abs``.
    asinh : callable
        Its inverse hyperbolic sine.
    clip : callable
        Its ``clip(a, lo, hi)`` (either bound may be None).
    """

    def __init__(self, xp, *, asinh, clip):
        self.sinh, self.cosh, self.sqrt, self.exp, self.abs = (
            xp.sinh, xp.cosh, xp.sqrt, xp.exp, xp.abs)
        self.asinh = asinh
        self._clip = clip

    def clip(self, a, lo=None, hi=None):
        """``a`` limited to ``[lo, hi]``."""
        return self._clip(a, lo, hi)


#: The transforms' functions on numpy arrays.
NumpyOps = ArrayOps(np, asinh=np.arcsinh, clip=np.clip)


def torch_ops():
    """The transforms' functions on torch tensors."""
    import torch

    return ArrayOps(torch, asinh=torch.asinh, clip=torch.clamp)


def forward_transform(x, norm, ron, ops=NumpyOps):
    """Pixels in the model unit -> network input (numpy or torch arrays)."""
    t = norm["transform"]
    if t == "asinh":
        return ops.asinh((x - norm.get("offset", 0.0)) / norm["scale"])
    if t == "linear":
        return (x - norm.get("offset", 0.0)) / norm["scale"]
    return 2.0 * ops.sqrt(ops.clip(x + (0.375 + ron ** 2), 0.0))


def inverse_transform(y, norm, ron, ops=NumpyOps, *, derivative=False):
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


def network_to_output(out, *, norm, ron, ratio, to_model, factor, ops=NumpyOps):
    """
    Network output (C, H, W) -> (image, standard deviation) in the output unit.

    ``to_model`` converts short-exposure electrons to the model unit and
    ``factor`` short-exposure electrons to the output unit.
    """
    with_model_sigma = out.shape[0] == 2
    x_model, dxdy = inverse_transform(out[0], norm, ron, ops, derivative=with_model_sigma)
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
#: Image statistics use every value up to this many, a regular subsample above.
SUBSAMPLE_ABOVE = 4_000_000
#: About this many values are kept in the subsample.
SUBSAMPLE_TARGET = 2_000_000


def subsample_stride(n):
    """
    Stride of the regular subsample of ``n`` values that the statistics use.

    1 (every value) up to `SUBSAMPLE_ABOVE` values, else
    ``n // SUBSAMPLE_TARGET``.
    """
    return n // SUBSAMPLE_TARGET if n > SUBSAMPLE_ABOVE else 1


def background_noise(electrons, bad=None):
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
    diff = diff[:: subsample_stride(diff.size)]  # a regular subsample is plenty for a median
    mad = np.median(np.abs(diff - np.median(diff)))
    return max(float(1.4826 * mad / math.sqrt(2.0)), MIN_NOISE)


def background_level(values, bad=None):
    """Median of the usable pixels (a regular subsample of large images)."""
    values = np.asarray(values, dtype=np.float64)
    good = np.isfinite(values)
    if bad is not None:
        good &= ~np.asarray(bad, dtype=bool)
    v = values[good]
    if v.size == 0:
        return 0.0
    v = v[:: subsample_stride(v.size)]
    return float(np.median(v))


def statistics_needed(norm, cond_names):
    """``(noise, level)``: whether the normalization or conditioning needs them."""
    return (norm.get("scale") == "noise" or "log_noise" in cond_names,
            norm.get("offset") == "median")


def measure_statistics(x_model, bad, *, norm, cond_names):
    """
    ``(noise, level)`` of an image in the model unit, each None when not needed.

    The background noise (`background_noise`) and median
    (`background_level`) of the usable pixels, measured only when the
    normalization or the conditioning needs them (`statistics_needed`).
    """
    need_noise, need_level = statistics_needed(norm, cond_names)
    noise = background_noise(x_model, bad) if need_noise else None
    level = background_level(x_model, bad) if need_level else None
    return noise, level


def resolve_inputs(x_model, bad, *, norm, ratio, exptime, ron, cond_names):
    """
    Numeric normalization and conditioning vector for one short exposure.

    ``x_model`` is the (bad-pixel filled) image in the model unit.  Returns
    ``(norm, cond, noise)``: ``norm`` with a numeric ``scale`` (a noise-scaled
    ``scale = "noise"`` becomes ``noise_factor`` times the background noise),
    the list of conditioning values in ``cond_names`` order and the background
    noise in the model unit (None when neither needs it).  An ``offset`` of
    ``"median"`` becomes the median of the usable pixels.
    """
    noise, level = measure_statistics(x_model, bad, norm=norm, cond_names=cond_names)
    norm, cond = apply_statistics(norm, noise=noise, level=level, ratio=ratio,
                                  exptime=exptime, ron=ron, cond_names=cond_names)
    return norm, cond, noise


def apply_statistics(norm, *, noise, level, ratio, exptime, ron, cond_names):
    """
    ``(norm, cond)`` from the image-wide background ``noise`` and ``level``.

    The part of `resolve_inputs` after the statistics, shared with
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


def network_input(electrons, *, norm, ratio, exptime, read_noise, cond_names, bad=None):
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
        What `network_target` needs to transform a target the same way.
    """
    norm = check_normalization(norm)
    x_model = np.array(electrons, dtype=np.float64)
    if bad is not None and np.any(bad):
        fill_bad(x_model, np.asarray(bad, dtype=bool))
    to_model = 1.0 / exptime if norm["unit"] == "electron/s" else 1.0
    x_model *= to_model
    resolved, cond, noise = resolve_inputs(x_model, bad, norm=norm, ratio=ratio,
                                           exptime=exptime, ron=read_noise,
                                           cond_names=cond_names)
    x = forward_transform(x_model, resolved, read_noise).astype(np.float32)
    ctx = {"norm": resolved, "ron": float(read_noise), "to_model": to_model, "noise": noise}
    return x, np.asarray(cond, dtype=np.float32), ctx


def network_target(electrons, *, norm, ctx):
    """Transform a target (short-exposure electrons) like `network_input` did its input."""
    x_model = np.asarray(electrons, dtype=np.float64) * ctx["to_model"]
    return forward_transform(x_model, ctx["norm"], ctx["ron"]).astype(np.float32)


def read_noise_value(read_noise, norm):
    """
    The read noise (electrons) of the ``read_noise`` argument, else of the normalization.

    Parameters
    ----------
    read_noise : float, `~astropy.units.Quantity` or None
        The argument of `~astro_unet.denoise_ccd`.
    norm : dict
        The model's normalization (its ``read_noise``, else 0).
    """
    if read_noise is None:
        return float(norm.get("read_noise") or 0.0)
    value, read_noise = _validation.quantity_to_float(
        read_noise, u.electron, unit_message="read_noise must be in electrons, got {unit}.",
        type_message="read_noise must be a number of electrons, got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"read_noise must be a finite number >= 0, got {read_noise!r}.")
    return value


def fill_bad(values, bad):
    """Replace ``bad`` pixels by the nearest good pixel's value (in place)."""
    from scipy import ndimage

    if bad.any():
        _, (iy, ix) = ndimage.distance_transform_edt(bad, return_indices=True)
        values[bad] = values[iy[bad], ix[bad]]
    return values
