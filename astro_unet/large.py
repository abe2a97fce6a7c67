# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Images larger than memory denoised block by block: `denoise_large`.

A FITS file (read piece by piece) or a `dask.array.Array` is denoised with
`dask.array.map_overlap` and written to FITS block by block.  The result
equals `~astro_unet.denoise_ccd` on the whole image to float precision,
because every block

* uses the tile plan of the *whole* image (`astro_unet.tiling.plan_tiles`)
  and computes exactly the tiles of that plan that touch the block, with
  the same feathered windows, added in the same order;
* gets the image-wide statistics that `denoise_ccd` computes on the whole
  image (the background noise of noise-scaled normalizations and of the
  ``log_noise`` condition, the median of an ``offset="median"``
  normalization), computed once before the blocks from exactly the values
  `denoise_ccd` uses, read in full-width strips.

The halo (``depth`` of `~dask.array.map_overlap`) is therefore the reach of
the tiles that touch a block: block edges are placed in the middle of a
tile's part that no other tile covers, so that only one row (column) of
tiles is computed twice per block edge.  Bad pixels are the non-finite
ones; each is filled with the nearest finite pixel of its block and its
halo (identical to `denoise_ccd` unless a hole is wider than the halo).
Memory and time are measured in :ref:`scale_benchmark`.
"""

import collections
import dataclasses
import functools
import math
import os
import time

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData

from . import _inference, _validation, fitsio
from ._normalization import (
    background_level,
    background_noise,
    forward_transform,
    subsample_stride,
)
from ._plan import DenoisePlan, check_options
from ._utils import atomic_output
from ._workers import check_model_spec, prepared_model

__all__ = ["denoise_large", "LargeResult"]

#: Default block side of `denoise_large` (pixels).
DEFAULT_CHUNK_SIZE = 4096

#: Pixels per full-width strip read when measuring the background noise.
_STRIP_PIXELS = 8_000_000

#: Result of `denoise_large` without an output file.
LargeResult = collections.namedtuple("LargeResult", ["data", "uncertainty", "mask", "header"])
LargeResult.__doc__ = """
Lazy result of `denoise_large` (``output_path=None``).

Attributes
----------
data, uncertainty : `dask.array.Array`
    The denoised image and its standard deviation.
mask : `dask.array.Array`
    True where the input was not finite.
header : `~astropy.io.fits.Header`
    The input header with the keywords of `~astro_unet.denoise_ccd`.
"""


# ---------------------------------------------------------------------------
# huge mosaics: reading and writing FITS piece by piece


class _FitsSource:
    """Array-like view of one image HDU, read piece by piece (``.section``)."""

    def __init__(self, path, index):
        self.path = os.path.abspath(os.fspath(path))
        self.index = index
        with fits.open(self.path) as hdul:
            hdu = hdul[index]
            self.shape = tuple(int(n) for n in hdu.shape)
            sample = np.asarray(hdu.section[(slice(0, 1),) * len(self.shape)])
        self.dtype = sample.dtype.newbyteorder("=")
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        with fits.open(self.path) as hdul:
            block = np.asarray(hdul[self.index].section[key])
        return block.astype(self.dtype, copy=False)


class _RawTarget:
    """Writable view of an image stored at ``offset`` in a file (for `dask.array.store`)."""

    def __init__(self, path, offset, shape, dtype):
        self.path, self.offset = os.fspath(path), int(offset)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.ndim = len(shape)

    def __setitem__(self, key, value):
        mm = np.memmap(self.path, dtype=self.dtype, mode="r+", offset=self.offset,
                       shape=self.shape)
        try:
            mm[key] = value
            mm.flush()
        finally:
            del mm


def _image_header(bitpix, shape, *, primary, cards=(), name=None):
    """Header of an image HDU of ``shape`` without building its data."""
    if primary:
        header = fits.PrimaryHDU().header
        header["BITPIX"] = bitpix
        header["NAXIS"] = 2
        header.insert("NAXIS", ("NAXIS1", shape[1]), after=True)
        header.insert("NAXIS1", ("NAXIS2", shape[0]), after=True)
        header["EXTEND"] = True
    else:
        header = fits.Header([("XTENSION", "IMAGE"), ("BITPIX", bitpix), ("NAXIS", 2),
                              ("NAXIS1", shape[1]), ("NAXIS2", shape[0]), ("PCOUNT", 0),
                              ("GCOUNT", 1)])
        if name is not None:
            header["EXTNAME"] = name
    for card in cards:
        header.append(card, end=True)
    return header


def _create_fits(path, hdus):
    """
    Write the headers of ``hdus = [(header, shape, dtype), ...]`` and size the file.

    Returns the byte offset of each HDU's data.  The data areas are left as
    (sparse) zeros, padded to FITS blocks.
    """
    offsets = []
    position = 0
    with open(path, "wb") as f:
        for header, shape, dtype in hdus:
            text = header.tostring(padding=True).encode("ascii")
            f.seek(position)
            f.write(text)
            position += len(text)
            offsets.append(position)
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            position += 2880 * math.ceil(nbytes / 2880)
        f.truncate(position)
    return offsets


# ---------------------------------------------------------------------------
# huge mosaics: tiling across blocks


def _axis_needs(bounds, starts, tile):
    """Halo each chunk ``[a, b)`` needs before and after to hold its tiles."""
    starts = np.asarray(starts)
    needs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        hit = starts[(starts < b) & (starts + tile > a)]
        needs.append((int(a - hit.min()), int(hit.max() + tile - b)))
    return needs


def _axis_chunks(length, starts, tile, target):
    """
    Chunk edges along one axis and the halo (depth) they need.

    Edges are put in the middle of the part of a tile that no other tile
    covers (so that only that tile is computed by both blocks), near
    multiples of ``target``; chunks smaller than the halo are merged.
    """
    starts = list(starts)
    candidates = []
    for j, s in enumerate(starts):
        lo = starts[j - 1] + tile if j > 0 else 0
        hi = starts[j + 1] if j + 1 < len(starts) else length
        mid = (lo + hi) // 2 if lo < hi else s + tile // 2
        if 0 < mid < length:
            candidates.append(mid)
    edges = [0]
    if candidates and target < length:
        candidates = np.array(sorted(set(candidates)))
        for k in range(1, math.ceil(length / target)):
            pick = int(candidates[np.argmin(np.abs(candidates - k * target))])
            if pick > edges[-1]:
                edges.append(pick)
    edges.append(length)
    while True:
        needs = _axis_needs(edges, starts, tile)
        depth = max(max(lo for lo, _ in needs[1:]) if len(needs) > 1 else 0,
                    max(hi for _, hi in needs[:-1]) if len(needs) > 1 else 0)
        sizes = np.diff(edges)
        small = [i for i, n in enumerate(sizes) if n < depth]
        if not small or len(edges) == 2:
            return tuple(int(n) for n in sizes), depth
        i = small[0]
        # merge the small chunk with its smaller neighbour
        if i == 0:
            del edges[1]
        elif i == len(sizes) - 1:
            del edges[-2]
        elif sizes[i - 1] <= sizes[i + 1]:
            del edges[i]
        else:
            del edges[i + 1]


_REMOTE_MODELS = {}


class _RemoteModel:
    """Reference to a network sent to the workers with `_remember_model`."""

    def __init__(self, key):
        self.key = key


def _remember_model(key, model):
    _REMOTE_MODELS[key] = model


class _BlockContext:
    """Everything a block task needs (picklable)."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def _denoise_block(block, block_id=None, *, ctx):
    """
    Denoise one block with halo: the tiles of the global plan that touch its core.

    Returns ``(2, h, w)``: the denoised core and its standard deviation.
    """
    from .tiling import blend_tiles

    _, i, j = block_id
    ey, ex = ctx.edges
    a, b = ey[i], ey[i + 1]
    c, d = ex[j], ex[j + 1]
    oy = a - (ctx.depth[0] if i > 0 else 0)
    ox = c - (ctx.depth[1] if j > 0 else 0)

    model = ctx.model
    if isinstance(model, _RemoteModel):
        model = _REMOTE_MODELS[model.key]
    p = ctx.plan
    dev, net, _ = prepared_model(model, ctx.device, measure_overlap=False)
    # the pixel operations of denoise_ccd, in the same order
    x = np.asarray(block).astype(np.float64)
    nonfinite = ~np.isfinite(x)
    core = (slice(a - oy, b - oy), slice(c - ox, d - ox))
    x_out = x[core] * (p.scale * p.factor)    # the input in the output unit
    saturated = p.saturated(x[core])
    p.to_model_unit(x, nonfinite)
    net_in = forward_transform(x.astype(np.float32), p.norm, p.ron)
    net_in = net_in.astype(np.float32, copy=False)
    del x
    run = _inference.host_predictor(net, dev, _inference.cond_tensor(p.cond, dev))
    # the tiles of the whole image's plan that touch the block's core
    out = blend_tiles(net_in, ctx.tiles, run, batch_size=p.batch_size, mode=p.mode,
                      region=((a, b), (c, d)), origin=(oy, ox))
    del net_in
    result, sigma = _inference.host_output(out, norm=p.norm, ron=p.ron, post=p.post,
                                           dtype=p.dtype)
    core_bad = nonfinite[core]
    p.finish(result, sigma, x_out, bad=core_bad, nonfinite=core_bad, saturated=saturated)
    return np.stack([result, sigma])


# ---------------------------------------------------------------------------
# huge mosaics: background noise and bad-pixel count in strips


def _strip_counts(strip, limit=np.inf):
    """Non-finite pixels, usable neighbour differences and pixels above ``limit`` of a strip."""
    bad = ~np.isfinite(strip)
    good_diff = ~(bad[:, 1:] | bad[:, :-1])
    too_large = np.abs(np.where(bad, 0, strip)) > limit
    return np.array([bad.sum(), good_diff.sum(), too_large.sum()], dtype=np.int64)


def _subsample(values, offset, stride):
    """
    Elements ``k`` of ``values`` with ``(offset + k) % stride == 0``.

    A copy: a strided view would keep all of ``values`` alive until the
    statistics of the whole image are computed, i.e. memory proportional to
    the image instead of to the subsample.
    """
    return values[(-offset) % stride::stride].copy() if stride > 1 else values


def _strip_sample(strip, *, scale, to_model, diff_at, pixel_at):
    """
    The values of a strip that the image-wide statistics of `denoise_ccd` use.

    ``diff_at = (offset, stride)`` selects the usable neighbour differences
    (`astro_unet._normalization.background_noise`), ``pixel_at`` the usable pixels
    (`astro_unet._normalization.background_level`), counted over the whole image in
    C order.
    """
    values = np.asarray(strip).astype(np.float64)
    values *= scale
    if to_model != 1.0:
        values *= to_model
    good = np.isfinite(values)
    pairs = good[:, 1:] & good[:, :-1]
    with np.errstate(invalid="ignore", over="ignore"):
        diff = values[:, 1:] - values[:, :-1]
    return _subsample(diff[pairs], *diff_at), _subsample(values[good], *pixel_at)


def _as_dask(source, chunks):
    """``source`` (dask array or `_FitsSource`) as a dask array with ``chunks``."""
    import dask.array as da

    if isinstance(source, da.Array):
        return source.rechunk(chunks)
    # read straight into the wanted blocks: no rechunking (and no copies held) in between
    return da.from_array(source, chunks=chunks, asarray=True, lock=False, fancy=False,
                         name=f"astro_unet-fits-{os.getpid()}-{time.time_ns()}")


def _scan(x, *, scale, to_model, compute):
    """
    Two passes over full-width strips of ``x``: the counts, then the statistics.

    Returns ``(n_nonfinite, noise, level)``: the background noise
    (`astro_unet._normalization.background_noise`) and the median
    (`astro_unet._normalization.background_level`) of the whole image in the model
    unit, exactly as `denoise_ccd` computes them: the same values, or the
    same regular subsample of them, are gathered strip by strip and handed
    to those very functions.
    """
    import dask

    ny, nx = x.shape
    rows = max(1, min(ny, _STRIP_PIXELS // max(nx, 1)))
    strips = _as_dask(x, ((rows,) * (ny // rows) + ((ny % rows,) if ny % rows else ()),
                          (nx,))).to_delayed().ravel()
    # as denoise_ccd: no value the network's float32 arithmetic cannot hold
    limit = _validation.FLOAT32_SAFE_LIMIT / abs(scale * to_model)
    counts = compute(*[dask.delayed(_strip_counts)(s, limit) for s in strips])
    counts = np.array(counts).reshape(-1, 3)
    n_bad = int(counts[:, 0].sum())
    if counts[:, 2].any():
        raise ValueError(
            f"the image has {int(counts[:, 2].sum())} pixel(s) beyond {limit:.3g} in its unit "
            f"({_validation.FLOAT32_SAFE_LIMIT:.0e} in the network's unit), which the "
            "network's float32 arithmetic cannot hold; check the unit and scale of the image.")
    if n_bad == ny * nx:
        raise ValueError("the image has no finite pixel: all values are NaN/inf.")
    good_diffs = counts[:, 1]
    good_pixels = np.array([rows * nx] * len(strips))
    if ny % rows:
        good_pixels[-1] = (ny % rows) * nx
    good_pixels = good_pixels - counts[:, 0]
    diff_offsets = np.concatenate([[0], np.cumsum(good_diffs)[:-1]])
    pixel_offsets = np.concatenate([[0], np.cumsum(good_pixels)[:-1]])
    diff_stride = subsample_stride(int(good_diffs.sum()))
    pixel_stride = subsample_stride(int(good_pixels.sum()))
    tasks = [dask.delayed(_strip_sample)(
        s, scale=scale, to_model=to_model,
        diff_at=(int(do), diff_stride), pixel_at=(int(po), pixel_stride))
        for s, do, po in zip(strips, diff_offsets, pixel_offsets)]
    parts = compute(*tasks)
    sample = np.concatenate([d for d, _ in parts])
    # a column of zeros and the differences give back the differences exactly
    pairs = np.zeros((sample.size, 2))
    pairs[:, 1] = sample
    noise = background_noise(pairs)
    level = background_level(np.concatenate([p for _, p in parts])[None, :])
    return n_bad, noise, level


# ---------------------------------------------------------------------------
# huge mosaics: the public function


def _input_array(source, hdu, header):
    """``(source, header, hdu index or None)``: a `_FitsSource` for a path, or the dask array."""
    import dask.array as da

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file.")
        fitsio.check_fits_file(path)
        with fits.open(path) as hdul:
            index = fitsio.resolve_hdu(hdul, hdu, path)
            file_header = hdul[index].header.copy()
            if index != 0:
                for card in hdul[0].header.cards:
                    if card.keyword not in fitsio.STRUCTURAL and card.keyword not in file_header:
                        file_header.append(card, end=True)
        if header is not None:
            file_header.update(header)
        src = _FitsSource(path, index)
        if src.ndim != 2:
            raise ValueError(f"{path} HDU {index} is {src.ndim}-D: denoise_large needs a 2-D "
                             "image.")
        return src, file_header, index
    if not isinstance(source, da.Array):
        raise TypeError("denoise_large takes the path of a FITS file or a dask.array.Array, "
                        f"got {type(source).__name__}; use denoise_ccd for in-memory images.")
    if hdu is not None:
        raise ValueError("hdu applies to FITS files only.")
    if source.ndim != 2:
        raise ValueError(f"the image must be 2-D, got shape {source.shape}.")
    kind = np.dtype(source.dtype)
    if not np.issubdtype(kind, np.number) or np.issubdtype(kind, np.complexfloating):
        raise TypeError(f"the image must hold real numbers, got dtype {source.dtype}.")
    return source, fits.Header() if header is None else fits.Header(header), None


def _clean_header(header):
    """``header`` without the structural keywords of its HDU."""
    out = fits.Header()
    for card in header.cards:
        key = card.keyword
        if (key in fitsio.STRUCTURAL and key not in ("COMMENT", "HISTORY", "")) \
                or key in fitsio.STALE_KEYWORDS or (key.startswith("NAXIS") and key[5:].isdigit()):
            continue
        out.append(card, end=True)
    return out


def denoise_large(path_or_array, output_path=None, *, ratio, model="default", estimate="extended",
                  hdu=None, chunk_size=None, unit=None, exposure_time=None, gain=None,
                  read_noise=None, saturation=None, header=None, device=None, tile_size=None,
                  overlap=None, batch_size=None, mode="feather", extrapolate=False,
                  client=None, workers=1, overwrite=False):
    """
    Denoise an image larger than memory, block by block, like `denoise_ccd`.

    The image is read in blocks with a halo (`dask.array.map_overlap`);
    every block computes the tiles of the whole image's tile plan that touch
    it, so the result equals `~astro_unet.denoise_ccd` on the whole image to
    float precision (see the module docstring), and the result is written to
    ``output_path`` block by block.

    Parameters
    ----------
    path_or_array : str, path-like or `dask.array.Array`
        A FITS file (read piece by piece, never whole) or a 2-D dask array.
    output_path : str or path-like, optional
        FITS file to write: the denoised image in the primary HDU (float32,
        or float64 for a float64 input) with the input header (WCS kept),
        the keywords and ``HISTORY`` of `~astro_unet.denoise_ccd`, an
        ``UNCERT`` extension (standard deviation) and, when the input has
        non-finite pixels, a ``MASK`` extension (read back by
        `~astropy.nddata.CCDData.read`).  Other HDUs of the input are not
        copied.  Written to a temporary file first and renamed.  Without it
        the lazy result is returned.
    ratio : float
        Exposure-time ratio ``r > 1``.
    model : str, path-like, `~astro_unet.model.AstroUNet` or tuple
        As for `~astro_unet.denoise_ccd`.
    estimate : {"extended", "long", "mean"}
        As for `~astro_unet.denoise_ccd`.
    hdu : int, str or tuple, optional
        Image HDU of a FITS file (default: the first HDU with image data);
        the primary header's keywords are visible for an extension.
    chunk_size : int, optional
        Approximate block side (default 4096); block edges are moved to fit
        the tile plan.
    unit : str or `~astropy.units.Unit`, optional
        Image unit; default ``BUNIT`` (required for a dask array without a
        header ``BUNIT``).
    exposure_time, gain, read_noise, saturation
        As for `~astro_unet.denoise_ccd` (default: ``EXPTIME``, ``GAIN``,
        ``SATURATE`` keywords).
    header : `~astropy.io.fits.Header` or dict, optional
        Metadata of a dask array (``EXPTIME``, ``BUNIT``, WCS, ...); for a
        file, keywords that replace the file's.
    device, tile_size, overlap, batch_size, mode, extrapolate
        As for `~astro_unet.denoise_ccd` (the same defaults, from the whole
        image's shape).  On CUDA the tiles are blended on the host.
    client : `distributed.Client`, optional
        Run the blocks on this cluster (the file must be readable and
        ``output_path`` writable by its workers at the same path).  Default:
        dask's threaded scheduler with ``workers`` threads.
    workers : int
        Blocks processed at the same time without a client (each one uses
        all of torch's threads, and memory grows with it).
    overwrite : bool
        Replace an existing ``output_path``.

    Returns
    -------
    result : str or `LargeResult`
        ``output_path`` (as a string) once written, or without it a
        `LargeResult` of lazy dask arrays (``data``, ``uncertainty``,
        ``mask``) and the output ``header``.

    Raises
    ------
    TypeError, ValueError, astropy.units.UnitsError
        As `~astro_unet.denoise_ccd` for the same inputs; ``output_path``
        exists and ``overwrite`` is False (`FileExistsError`).
    FileNotFoundError
        The input file does not exist.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from astropy.nddata import CCDData
    >>> from astro_unet import denoise_ccd, denoise_large
    >>> from astro_unet.model import AstroUNet
    >>> net = AstroUNet(base_channels=4, depth=2)
    >>> pixels = np.random.default_rng(0).poisson(30.0, (96, 128)).astype(np.float32)
    >>> out = denoise_large(da.from_array(pixels, chunks=48), ratio=2, model=net,
    ...                     unit="electron", header={"EXPTIME": 10.0}, chunk_size=64,
    ...                     tile_size=32, overlap=8, device="cpu")
    >>> out.data.shape, out.data.dtype, out.header["DNRATIO"], out.header["EXPTIME"]
    ((96, 128), dtype('float32'), 2.0, 20.0)
    >>> whole = denoise_ccd(CCDData(pixels, unit="electron"), ratio=2, model=net,
    ...                     tile_size=32, overlap=8, device="cpu")
    >>> bool(np.allclose(out.data.compute(), whole.data, rtol=1e-6))
    True
    """
    import dask
    import dask.array as da

    r = _validation.validate_ratio(ratio)
    check_options(estimate=estimate, mode=mode, extrapolate=extrapolate)
    chunk = DEFAULT_CHUNK_SIZE if chunk_size is None else _validation.positive_int(
        chunk_size, "chunk_size")
    workers = _validation.positive_int(workers, "workers")
    if output_path is not None:
        output_path = os.fspath(output_path)
        if os.path.exists(output_path) and not overwrite:
            raise FileExistsError(f"{output_path} exists: pass overwrite=True to replace it.")
        directory = os.path.dirname(os.path.abspath(output_path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"cannot write {output_path}: directory {directory} "
                                    "does not exist.")
    x, in_header, index = _input_array(path_or_array, hdu, header)
    if unit is None:
        if "BUNIT" not in in_header:
            raise u.UnitsError("the image has no unit: pass unit=... (electron, electron/s, "
                               "adu or adu/s) or a header with BUNIT.")
        unit = in_header["BUNIT"]
    try:
        unit = u.Unit(unit)
    except ValueError as err:
        raise u.UnitsError(f"invalid unit {unit!r}: {err}") from None
    in_dtype = np.dtype(x.dtype)
    # as _validation.output_dtype: single precision (either byte order) stays float32
    single = in_dtype.kind == "f" and in_dtype.itemsize == 4

    # --- the plan of denoise_ccd, made once for the whole image
    model = check_model_spec(model)
    plan = DenoisePlan.build(
        CCDData(np.zeros((1, 1)), unit=unit, meta=in_header), x.shape, call="denoise_large",
        ratio=r, model=model, estimate=estimate, mode=mode, device=device,
        tile_size=tile_size, overlap=overlap, batch_size=batch_size,
        exposure_time=exposure_time, gain=gain, read_noise=read_noise, saturation=saturation,
        extrapolate=extrapolate, dtype=np.float32 if single else np.float64)
    tiles = plan.tile_plan(x.shape)

    if client is not None:
        def compute(*args):
            return dask.compute(*args, scheduler=client)
    else:
        def compute(*args):
            return dask.compute(*args, scheduler="threads", num_workers=workers)

    # both statistics: the long-exposure estimate needs them whatever the model uses
    n_bad, noise, level = _scan(x, scale=plan.scale, to_model=plan.to_model, compute=compute)
    plan = plan.with_statistics(noise=noise, level=level)
    out_dtype = plan.dtype

    # --- blocks
    (top, bottom), (left, right) = tiles.pad
    chunks_y, depth_y = _axis_chunks(tiles.padded_shape[0], tiles.y_starts,
                                     tiles.tile_shape[0], chunk)
    chunks_x, depth_x = _axis_chunks(tiles.padded_shape[1], tiles.x_starts,
                                     tiles.tile_shape[1], chunk)
    # the image in the blocks of the padded image (less the padding at its edges)
    inner_y = (chunks_y[0] - top,) + chunks_y[1:-1] + (chunks_y[-1] - bottom,) \
        if len(chunks_y) > 1 else (chunks_y[0] - top - bottom,)
    inner_x = (chunks_x[0] - left,) + chunks_x[1:-1] + (chunks_x[-1] - right,) \
        if len(chunks_x) > 1 else (chunks_x[0] - left - right,)
    x = _as_dask(x, (inner_y, inner_x))
    padded = x
    if any(tiles.pad[0]) or any(tiles.pad[1]):
        padded = da.pad(x, tiles.pad, mode="reflect").rechunk((chunks_y, chunks_x))
    edges = (tuple(np.concatenate([[0], np.cumsum(chunks_y)]).tolist()),
             tuple(np.concatenate([[0], np.cumsum(chunks_x)]).tolist()))
    model_ref = model
    if not isinstance(model, (str, os.PathLike)) and client is not None:
        # sent once to every worker, looked up there by the tasks
        model_ref = _RemoteModel(f"{os.getpid()}-{time.time_ns()}")
        client.run(_remember_model, model_ref.key, model)
    # the plan travels to the tasks without its network (they load or look it up)
    ctx = _BlockContext(edges=edges, depth=(depth_y, depth_x), model=model_ref,
                        device=str(plan.device), tiles=tiles,
                        plan=dataclasses.replace(plan, net=None))
    stacked = da.map_overlap(functools.partial(_denoise_block, ctx=ctx), padded,
                             depth={0: depth_y, 1: depth_x}, boundary="none", trim=False,
                             allow_rechunk=False, new_axis=[0],
                             chunks=((2,), chunks_y, chunks_x), dtype=out_dtype,
                             meta=np.empty((0, 0, 0), dtype=out_dtype))
    ny, nx = x.shape
    stacked = stacked[:, top:top + ny, left:left + nx]
    data, sigma = stacked[0], stacked[1]
    mask = ~da.isfinite(x)
    if plan.saturation is not None:
        mask = mask | (x >= plan.saturation)

    # --- metadata (the keywords of denoise_ccd)
    meta = _clean_header(in_header)
    if unit is not None:
        meta["BUNIT"] = unit.to_string()
    plan.record(meta)

    if output_path is None:
        return LargeResult(data, sigma, mask, meta)

    # --- write: headers first, then the blocks into the file
    file_dtype = np.dtype(">f4") if single or in_dtype.kind != "f" else np.dtype(">f8")
    bitpix = -64 if file_dtype.itemsize == 8 else -32
    hdus = [(_image_header(bitpix, (ny, nx), primary=True, cards=meta.cards), (ny, nx),
             file_dtype)]
    unc_header = _image_header(-32, (ny, nx), primary=False, name="UNCERT")
    unc_header["UTYPE"] = "StdDevUncertainty"
    hdus.append((unc_header, (ny, nx), np.dtype(">f4")))
    with_mask = bool(n_bad) or plan.saturation is not None
    if with_mask:
        hdus.append((_image_header(8, (ny, nx), primary=False, name="MASK"), (ny, nx),
                     np.dtype("u1")))
    with atomic_output(output_path) as tmp:
        offsets = _create_fits(tmp, hdus)
        sources = [data, sigma]
        targets = [_RawTarget(tmp, offsets[0], (ny, nx), file_dtype),
                   _RawTarget(tmp, offsets[1], (ny, nx), ">f4")]
        if with_mask:
            sources.append(mask.astype(np.uint8))
            targets.append(_RawTarget(tmp, offsets[2], (ny, nx), "u1"))
        stored = da.store(sources, targets, lock=False, compute=False)
        compute(stored)
        if os.path.exists(output_path) and not overwrite:
            raise FileExistsError(f"{output_path} exists: pass overwrite=True to replace it.")
    return output_path
