# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Tiled processing of large images with feathered blending (pure numpy).

A convolutional network can be applied to an image of any size, but memory
grows with the image, so large frames are cut into overlapping tiles.  Near a
tile edge the network sees its own zero padding instead of the real
neighbourhood, so the tiles overlap by at least the network's effective
receptive field and the predictions are blended with weights that fall
smoothly to (nearly) zero towards the tile edges that face another tile:

* `plan_tiles` chooses the tile origins: tiles of equal size spread evenly
  so that the first and last are flush with the image edges and neighbours
  overlap by at least ``overlap`` pixels; origins are multiples of the
  network's ``size_multiple``.  An image smaller than one tile, or
  whose side is not a multiple of the network's ``size_multiple``, is padded
  by reflection (the padding is cut off again at the end).
* `feather_window` is the blending weight of one tile: 1 in the centre and a
  half-Hann (``sin**2``) taper over ``overlap`` pixels on each side that has
  a neighbour.  It is strictly positive everywhere, and sides at the image
  edge are not tapered.
* `process_tiles` runs a function over batches of tiles and returns
  ``sum(w * prediction) / sum(w)`` for every pixel.

``mode="paper"`` reproduces the inference of Vojtekova et al. (2021): 256x256
tiles moved by 32 pixels, all predictions of a pixel averaged with equal
weight (an interior pixel is computed 64 times).

This module needs only numpy, so it is tested without torch.
"""

import dataclasses
import math

import numpy as np

from ._progress import ProgressBar

__all__ = ["TilePlan", "plan_tiles", "pad_for_plan", "feather_window", "process_tiles",
           "blend_tiles"]

#: Tile size and step of the paper's mosaic (``mode="paper"``).
PAPER_TILE_SIZE = 256
PAPER_STEP = 32

MODES = ("feather", "paper")


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """
    Where the tiles of an image lie (made by `plan_tiles`).

    Attributes
    ----------
    image_shape : tuple of int
        Shape of the image.
    padded_shape : tuple of int
        Shape after reflection padding (equal to ``image_shape`` unless the
        image is smaller than a tile or not a multiple of ``size_multiple``).
    pad : tuple of tuple of int
        ``((top, bottom), (left, right))`` padding added to the image.
    tile_shape : tuple of int
        ``(height, width)`` of every tile.
    overlap : int
        Requested minimum overlap between neighbouring tiles.
    y_starts, x_starts : tuple of int
        Tile origins along each axis, in padded coordinates; the tiles are
        all combinations ``(y, x)``.

    Examples
    --------
    >>> from astro_unet.tiling import plan_tiles
    >>> plan = plan_tiles((1024, 1024), tile_size=512, overlap=32, size_multiple=16)
    >>> plan.n_tiles, plan.tile_shape, round(plan.coverage, 2)
    (9, (368, 368), 1.16)
    """

    image_shape: tuple
    padded_shape: tuple
    pad: tuple
    tile_shape: tuple
    overlap: int
    y_starts: tuple
    x_starts: tuple

    @property
    def n_tiles(self):
        """Number of tiles."""
        return len(self.y_starts) * len(self.x_starts)

    @property
    def origins(self):
        """List of ``(y0, x0)`` origins (padded coordinates), row by row."""
        return [(y, x) for y in self.y_starts for x in self.x_starts]

    @property
    def coverage(self):
        """Mean number of times a pixel of the image is computed."""
        th, tw = self.tile_shape
        return self.n_tiles * th * tw / (self.image_shape[0] * self.image_shape[1])


def _tile_count(padded, tile, overlap, multiple):
    # origins lie on the multiple grid, so that the network's pooling grid is
    # the same in every tile (the output then depends on the tile position
    # only near tile edges); the largest allowed step is tile - overlap
    units = (padded - tile) // multiple
    step = (tile - overlap) // multiple
    return units, math.ceil(units / step) + 1


def _axis_plan(n, tile, overlap, multiple, fit):
    """Tile side, padding, padded length and origins along one axis."""
    padded = multiple * math.ceil(n / multiple)
    extra = padded - n
    pad = (extra // 2, extra - extra // 2)
    if padded <= tile:
        return padded, pad, padded, (0,)
    units, count = _tile_count(padded, tile, overlap, multiple)
    if fit:
        # the smallest tile that needs no more tiles: less computed twice
        while (tile - multiple - overlap >= multiple
               and _tile_count(padded, tile - multiple, overlap, multiple)[1] <= count):
            tile -= multiple
        units, count = _tile_count(padded, tile, overlap, multiple)
    starts = multiple * np.round(np.linspace(0, units, count)).astype(int)
    return tile, pad, padded, tuple(int(s) for s in starts)


def plan_tiles(shape, *, tile_size, overlap, size_multiple=1, fit=True):
    """
    Plan overlapping tiles that cover an image.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` image shape.
    tile_size : int
        Largest tile side; rounded down to a multiple of ``size_multiple``
        (at least ``size_multiple``) and reduced to the (padded) image side
        when the image is smaller.
    overlap : int
        Minimum overlap of neighbouring tiles (pixels, ``0 <= overlap <=
        tile_size - size_multiple``).  The tiles are spread evenly with
        origins on multiples of ``size_multiple`` (so the network's pooling
        grid is the same in all tiles); actual overlaps can be larger.
    size_multiple : int
        Tile sides must be multiples of this (``2**(depth - 1)`` for a
        U-net); the image is padded by reflection to a multiple if needed.
    fit : bool
        Shrink the tiles along each axis to the smallest side that needs no
        more tiles (e.g. a 1024-pixel axis with 512-pixel tiles overlapping
        by 32 pixels gets three 368-pixel tiles instead of three 512-pixel
        ones).  The paper mode uses ``fit=False``.

    Returns
    -------
    plan : `TilePlan`

    Raises
    ------
    ValueError
        Non-positive sizes, a negative overlap or one that is not smaller
        than the tile.

    Examples
    --------
    >>> from astro_unet.tiling import plan_tiles
    >>> plan = plan_tiles((100, 300), tile_size=128, overlap=16, size_multiple=8)
    >>> plan.padded_shape, plan.tile_shape, plan.pad
    ((104, 304), (104, 112), ((2, 2), (2, 2)))
    >>> plan.x_starts
    (0, 96, 192)
    >>> plan = plan_tiles((1000, 1000), tile_size=256, overlap=32, size_multiple=16)
    >>> plan.tile_shape, plan.y_starts
    ((240, 240), (0, 192, 384, 576, 768))
    """
    if len(shape) != 2 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape must be two positive integers, got {shape!r}.")
    for name, value in (("tile_size", tile_size), ("size_multiple", size_multiple)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if isinstance(overlap, bool) or int(overlap) != overlap or overlap < 0:
        raise ValueError(f"overlap must be a non-negative integer, got {overlap!r}.")
    multiple = int(size_multiple)
    tile = max(multiple, int(tile_size) // multiple * multiple)
    overlap = int(overlap)
    axes = []
    for n in shape:
        n = int(n)
        padded = multiple * math.ceil(n / multiple)
        if padded > tile and tile - overlap < multiple:
            raise ValueError(
                f"overlap ({overlap}) must be smaller than the tile size ({tile}) by at "
                f"least size_multiple ({multiple}); use a larger tile_size or a smaller overlap."
            )
        axes.append(_axis_plan(n, tile, overlap, multiple, fit))
    return TilePlan(
        image_shape=tuple(int(s) for s in shape),
        padded_shape=(axes[0][2], axes[1][2]),
        pad=(axes[0][1], axes[1][1]),
        tile_shape=(axes[0][0], axes[1][0]),
        overlap=overlap,
        y_starts=axes[0][3],
        x_starts=axes[1][3],
    )


def pad_for_plan(image, plan):
    """
    Pad ``image`` by reflection as ``plan`` requires (no copy if no padding).

    The image is mirrored without repeating its edge pixels; numpy repeats the
    reflection when the padding is longer than the image, and an axis of a
    single pixel is repeated instead.

    Parameters
    ----------
    image : `numpy.ndarray`
        2-D image of shape ``plan.image_shape``.
    plan : `TilePlan`

    Returns
    -------
    padded : `numpy.ndarray`
        Array of shape ``plan.padded_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.tiling import pad_for_plan, plan_tiles
    >>> plan = plan_tiles((1, 5), tile_size=8, overlap=0, size_multiple=4)
    >>> pad_for_plan(np.arange(5.0)[None], plan)[1]
    array([1., 0., 1., 2., 3., 4., 3., 2.])
    """
    if image.shape != plan.image_shape:
        raise ValueError(f"image shape {image.shape} differs from the plan's {plan.image_shape}.")
    padded = image
    for axis in (0, 1):
        if any(plan.pad[axis]):
            widths = [(0, 0), (0, 0)]
            widths[axis] = plan.pad[axis]
            mode = "reflect" if image.shape[axis] > 1 else "edge"
            padded = np.pad(padded, widths, mode=mode)
    return padded


def _taper_1d(length, taper, first, last):
    w = np.ones(length)
    taper = min(taper, length // 2)
    if taper > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(taper) + 0.5) / taper) ** 2
        if not first:
            w[:taper] = ramp
        if not last:
            w[length - taper:] = ramp[::-1]
    return w


def feather_window(tile_shape, overlap, *, sides=(True, True, True, True)):
    """
    Blending weight of one tile.

    Parameters
    ----------
    tile_shape : tuple of int
        ``(height, width)``.
    overlap : int
        Taper length in pixels (limited to half the tile side).
    sides : tuple of bool
        Whether to taper the (top, bottom, left, right) side; a side at the
        image edge has no neighbour and is left flat.

    Returns
    -------
    window : `numpy.ndarray`
        float64 array of ``tile_shape``, in ``(0, 1]``: 1 in the centre and
        ``sin(pi/2 * (d + 0.5) / overlap)**2`` at ``d`` pixels from a tapered
        edge.

    Examples
    --------
    >>> from astro_unet.tiling import feather_window
    >>> w = feather_window((8, 8), 2)
    >>> float(w.min()) > 0, float(w[4, 4])
    (True, 1.0)
    >>> [round(float(v), 3) for v in w[4, :3]]
    [0.146, 0.854, 1.0]
    """
    top, bottom, left, right = sides
    wy = _taper_1d(tile_shape[0], overlap, not top, not bottom)
    wx = _taper_1d(tile_shape[1], overlap, not left, not right)
    return np.outer(wy, wx)


class NumpyTiles:
    """
    The array operations of `blend_tiles` on numpy arrays (the host).

    Predictions are blended in float64 with float64 windows.
    """

    @staticmethod
    def zeros(shape):
        """float64 zeros of ``shape``."""
        return np.zeros(shape)

    @staticmethod
    def stack(tiles):
        """``(N, h, w)`` array of the tiles."""
        return np.stack(tiles)

    @staticmethod
    def asarray(pred):
        """The predictions as an array of this backend."""
        return np.asarray(pred)

    @staticmethod
    def window(window):
        """A `feather_window` (float64 numpy) for this backend."""
        return window


class TorchTiles:
    """
    The array operations of `blend_tiles` on torch tensors on ``device``.

    Predictions are blended in float32 on the device.

    Parameters
    ----------
    device : `torch.device`
        Where the tensors live.
    """

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device

    def zeros(self, shape):
        """float32 zeros of ``shape`` on the device."""
        return self.torch.zeros(shape, dtype=self.torch.float32, device=self.device)

    def stack(self, tiles):
        """``(N, h, w)`` tensor of the tiles."""
        return self.torch.stack(tiles)

    @staticmethod
    def asarray(pred):
        """The predictions (already a tensor)."""
        return pred

    def window(self, window):
        """A `feather_window` as a float32 tensor on the device."""
        return self.torch.from_numpy(window).float().to(self.device)


def blend_tiles(image, plan, func, *, batch_size=1, mode="feather", region=None,
                origin=(0, 0), xp=NumpyTiles, progress=False):
    """
    Run ``func`` over the tiles of ``plan`` and blend the predictions (the one tile loop).

    Parameters
    ----------
    image : array
        The padded image (``plan.padded_shape``), or the part of it whose
        first pixel is at ``origin`` in padded coordinates, as an array of
        ``xp``.
    plan : `TilePlan`
        The tiles.
    func : callable
        Maps a batch of tiles ``(N, h, w)`` to predictions ``(N, C, h, w)``.
    batch_size : int
        Tiles per call of ``func``.
    mode : {"feather", "paper"}
        Feathered windows (`feather_window`) or equal weights.
    region : tuple of tuple of int, optional
        ``((y0, y1), (x0, x1))``, in padded coordinates: only this part of
        the result is computed, from the tiles that touch it (default: the
        whole padded image).
    origin : tuple of int
        Padded coordinates of ``image[0, 0]``.
    xp : `NumpyTiles` or `TorchTiles`
        Array operations (numpy on the host, torch on a device).
    progress : bool
        Show a progress bar.

    Returns
    -------
    result : array
        ``(C, y1 - y0, x1 - x0)``: for every pixel of ``region`` the weighted
        mean of the predictions of all tiles that contain it.

    Raises
    ------
    ValueError
        ``func`` returns the wrong shape.
    """
    (a, b), (c, d) = region if region is not None else ((0, plan.padded_shape[0]),
                                                        (0, plan.padded_shape[1]))
    oy, ox = origin
    th, tw = plan.tile_shape
    last_y, last_x = plan.y_starts[-1], plan.x_starts[-1]
    origins = [(y, x) for (y, x) in plan.origins
               if y < b and y + th > a and x < d and x + tw > c]
    weight_sum = xp.zeros((b - a, d - c))
    accum = None
    windows = {}
    bar = ProgressBar(len(origins), progress, "astro_unet tiles", unit="tile")
    try:
        for b0 in range(0, len(origins), batch_size):
            chunk = origins[b0:b0 + batch_size]
            tiles = xp.stack([image[y - oy:y - oy + th, x - ox:x - ox + tw] for y, x in chunk])
            if tiles.shape[1:] != (th, tw):  # pragma: no cover - guarded by the callers
                raise RuntimeError("a tile reaches beyond the image given.")
            pred = xp.asarray(func(tiles))
            if pred.ndim != 4 or pred.shape[0] != len(chunk) or pred.shape[2:] != (th, tw):
                raise ValueError(
                    f"func must return an array of shape (N, C, {th}, {tw}) with "
                    f"N = {len(chunk)}, got {tuple(pred.shape)}."
                )
            if accum is None:
                accum = xp.zeros((pred.shape[1], b - a, d - c))
            elif pred.shape[1] != accum.shape[0]:
                raise ValueError("func returned a different number of channels for another batch.")
            for (y, x), p in zip(chunk, pred):
                y0, y1 = max(y, a), min(y + th, b)
                x0, x1 = max(x, c), min(x + tw, d)
                in_tile = (slice(None), slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
                out = (slice(y0 - a, y1 - a), slice(x0 - c, x1 - c))
                if mode == "paper":
                    accum[(slice(None),) + out] += p[in_tile]
                    weight_sum[out] += 1.0
                    continue
                sides = (y > 0, y < last_y, x > 0, x < last_x)
                w = windows.get(sides)
                if w is None:
                    w = windows[sides] = xp.window(
                        feather_window((th, tw), plan.overlap, sides=sides))
                accum[(slice(None),) + out] += (w * p)[in_tile]
                weight_sum[out] += w[in_tile[1:]]
            bar.update(len(chunk))
    finally:
        bar.close()
    accum /= weight_sum
    return accum


def process_tiles(image, func, *, tile_size=None, overlap=None, batch_size=1,
                  size_multiple=1, mode="feather", progress=False):
    """
    Apply ``func`` to overlapping tiles of ``image`` and blend the results.

    Parameters
    ----------
    image : array-like
        2-D image (converted to float32 for ``func``).
    func : callable
        Maps a float32 array of tiles ``(N, h, w)`` to predictions
        ``(N, C, h, w)`` (any real dtype).
    tile_size : int, optional
        Tile side (see `plan_tiles`); default 512, or 256 in paper mode.
    overlap : int, optional
        Minimum overlap of neighbouring tiles; default 32, or
        ``tile_size - 32`` in paper mode (tiles moved by 32 pixels).
    batch_size : int
        Number of tiles per call of ``func``.
    size_multiple : int
        Tile sides must be multiples of this.
    mode : {"feather", "paper"}
        ``"feather"``: weights from `feather_window`; ``"paper"``: equal
        weights for every prediction (the paper's plain average).
    progress : bool
        Show a tqdm progress bar (or, without tqdm, lines on stderr).

    Returns
    -------
    result : `numpy.ndarray`
        float64 array ``(C, ny, nx)``: for every pixel the weighted mean of
        the predictions of all tiles that contain it.

    Raises
    ------
    ValueError
        Bad image, mode or sizes, or ``func`` returning the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.tiling import process_tiles
    >>> image = np.arange(70 * 90, dtype=float).reshape(70, 90)
    >>> out = process_tiles(image, lambda t: 2 * t[:, None], tile_size=32,
    ...                     overlap=8, batch_size=4, size_multiple=8)
    >>> out.shape, bool(np.allclose(out[0], 2 * image))
    ((1, 70, 90), True)
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {image.shape}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    batch_size = int(batch_size)
    if tile_size is None:
        tile_size = PAPER_TILE_SIZE if mode == "paper" else 512
    if overlap is None:
        overlap = max(0, tile_size - PAPER_STEP) if mode == "paper" else 32
    plan = plan_tiles(image.shape, tile_size=tile_size, overlap=overlap,
                      size_multiple=size_multiple, fit=mode == "feather")
    padded = pad_for_plan(image.astype(np.float32, copy=False), plan)
    accum = blend_tiles(padded, plan, func, batch_size=batch_size, mode=mode,
                        progress=progress)
    return crop_padding(accum, plan)


def crop_padding(result, plan):
    """
    ``result[:, ...]`` (a padded image, numpy or torch) without the padding of ``plan``.

    Parameters
    ----------
    result : array
        ``(C,) + plan.padded_shape``.
    plan : `TilePlan`

    Returns
    -------
    cropped : array
        ``(C,) + plan.image_shape``, a view.
    """
    (top, bottom), (left, right) = plan.pad
    ny, nx = plan.padded_shape
    return result[:, top:ny - bottom, left:nx - right]
