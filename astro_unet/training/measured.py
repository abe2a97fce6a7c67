# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Measured training pairs: real short and long exposures, and repeated exposures.

Every other training pair is made with `~astro_unet.simulate_short_exposure`.
The pairs here carry real noise: `repeated_exposure_pairs` turns frames of
one field into pairs of one frame against the mean of the others
(Noise2Noise-style: the target is noisy too, but its noise is independent
of the input's and has zero mean); `pair_table_pairs` reads a table of
``(short, long)`` files and aligns each pair onto the short frame's grid
with `~astro_unet.align_pair`.  `MeasuredPairs` draws random crops of
them for `~astro_unet.training.PairDataset`.  See :ref:`real_pairs`.
"""

import dataclasses
import os

import numpy as np

from .data import dihedral_augment, random_crops
from .pairs import Pair

__all__ = ["repeated_exposure_pairs", "pair_table_pairs", "MeasuredPairs"]


def _measured(x, target, mask, *, ratio, exptime, read_noise, source):
    """A whole-image `~astro_unet.training.Pair` with real noise in input and target."""
    return Pair(input=np.asarray(x, dtype=np.float32), target=np.asarray(target, np.float32),
                mask=mask, ratio=ratio, exptime=exptime, read_noise=read_noise,
                dark_current=0.0, sky=0.0, sky_subtracted=False, source=source,
                noiseless_target=False)


def _check_frames(frames, masks):
    frames = [np.asarray(f, dtype=np.float64) for f in frames]
    if len(frames) < 2:
        raise ValueError(f"repeated exposures need at least 2 frames, got {len(frames)}.")
    shape = frames[0].shape
    if len(shape) != 2 or any(f.shape != shape for f in frames):
        raise ValueError("the frames must be 2-D and of one shape, got "
                         f"{[f.shape for f in frames]}.")
    if masks is None:
        masks = [np.zeros(shape, bool)] * len(frames)
    masks = [np.asarray(m, dtype=bool) for m in masks]
    if len(masks) != len(frames) or any(m.shape != shape for m in masks):
        raise ValueError("masks must give one mask of the frames' shape per frame.")
    return frames, masks


def repeated_exposure_pairs(frames, *, exptime, read_noise, masks=None, rows=None,
                            source="repeated"):
    """
    Pairs from repeated exposures of one field: each frame against the mean of the others.

    Parameters
    ----------
    frames : sequence of array-like
        ``n >= 2`` mutually aligned frames of the same exposure time, in
        electrons (sky and sources in the data, as read out).
    exptime : float
        Exposure time of one frame (s).
    read_noise : float
        Read noise of one frame (electrons).
    masks : sequence of array-like of bool, optional
        Bad pixels of each frame; a pixel bad in any frame is bad in every
        pair.
    rows : tuple of int, optional
        ``(start, stop)``: use only these rows (hold the rest out, e.g. for
        the real-noise check of ``benchmarks/quality.py``).
    source : str, optional
        Prefix of each pair's ``source``.

    Returns
    -------
    pairs : list of `~astro_unet.training.Pair`
        ``n`` whole-frame pairs (electrons of one frame; no noiseless
        target); the target of frame ``k`` is the mean of the other ``n - 1``
        frames, so ``ratio = n - 1``.

    Raises
    ------
    ValueError
        Fewer than two frames, frames of different shapes, an empty or
        invalid ``rows`` range.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.training import repeated_exposure_pairs
    >>> rng = np.random.default_rng(0)
    >>> frames = [rng.poisson(100.0, (32, 32)) for _ in range(5)]
    >>> pairs = repeated_exposure_pairs(frames, exptime=5.0, read_noise=3.0)
    >>> len(pairs), pairs[0].ratio, bool(np.allclose(pairs[0].target,
    ...                                              np.mean(frames[1:], axis=0)))
    (5, 4.0, True)
    """
    frames, masks = _check_frames(frames, masks)
    bad = np.any(masks, axis=0)
    for f in frames:
        bad |= ~np.isfinite(f)
    sl = slice(None)
    if rows is not None and len(rows):
        start, stop = (int(v) for v in rows)
        if not 0 <= start < stop <= frames[0].shape[0]:
            raise ValueError(f"rows must be (start, stop) with 0 <= start < stop <= "
                             f"{frames[0].shape[0]}, got {tuple(rows)}.")
        sl = slice(start, stop)
    n = len(frames)
    total = np.sum([np.where(bad, 0.0, f) for f in frames], axis=0)
    pairs = []
    for k, frame in enumerate(frames):
        x = np.where(bad, 0.0, frame)
        target = (total - x) / (n - 1)
        pairs.append(_measured(x[sl], target[sl], bad[sl].copy(), ratio=float(n - 1),
                               exptime=float(exptime), read_noise=float(read_noise),
                               source=f"{source}:{k}"))
    return pairs


def pair_table_pairs(table, *, data_dir=None, method="interp"):
    """
    Pairs from a table of real ``(short, long)`` exposures of the same fields.

    Each long exposure is aligned onto its short exposure's detector grid
    with `~astro_unet.align_pair` (``grid="short"``: the short frame keeps its
    white noise), converted to electrons and scaled to the short exposure
    time.  Exposure times come from the headers (``EXPTIME``).

    Parameters
    ----------
    table : `~astropy.table.Table` or path
        Columns ``short`` and ``long`` (FITS paths, relative to
        ``data_dir``); optional ``short_hdu``/``long_hdu``, ``unit`` (for
        files without ``BUNIT``), ``gain`` (electron per adu, for counts in
        adu without a ``GAIN`` keyword) and ``read_noise`` (electrons of the
        short exposure; default the header's ``RDNOISE``, else 0).
    data_dir : str or path-like, optional
        Directory the paths are relative to (default: as given).
    method : str, optional
        `~astro_unet.align_pair`'s ``method``.

    Returns
    -------
    pairs : list of `~astro_unet.training.Pair`
        Whole-image pairs in electrons of the short exposure, the target
        with its own (``ratio`` times smaller relative) noise.

    Raises
    ------
    ValueError
        A table without ``short`` and ``long`` columns, a long exposure not
        longer than its short one, or a pair `~astro_unet.align_pair` refuses.
    """
    from astropy.table import Table

    from ..align import align_pair
    from .._validation import electron_scale, meta_lookup
    from ..fitsio import read_ccd

    if not isinstance(table, Table):
        table = Table.read(table, format="ascii.ecsv")
    missing = [c for c in ("short", "long") if c not in table.colnames]
    if missing:
        raise ValueError(f"the pair table needs the columns 'short' and 'long'; "
                         f"missing: {missing}.")
    base = "" if data_dir is None else os.fspath(data_dir)

    def column(row, name, default=None):
        if name not in row.colnames:
            return default
        value = row[name]
        if np.ma.is_masked(value) or (isinstance(value, str) and not value.strip()):
            return default
        return value

    pairs = []
    for row in table:
        ccds = []
        for which in ("short", "long"):
            path = os.path.join(base, str(row[which]))
            ccd, _ = read_ccd(path, hdu=column(row, f"{which}_hdu"), unit=column(row, "unit"))
            ccds.append((path, ccd))
        (short_path, short), (long_path, long) = ccds
        aligned = align_pair(short, long, grid="short", method=method)
        gain = column(row, "gain")
        scale_s, t_short = electron_scale(aligned.short, gain=gain, need_time=True)
        scale_l, t_long = electron_scale(aligned.long, gain=gain, need_time=True)
        if not t_long > t_short:
            raise ValueError(f"{long_path} ({t_long:g} s) is not longer than {short_path} "
                             f"({t_short:g} s).")
        ron = column(row, "read_noise")
        if ron is None:
            _, ron = meta_lookup(short.meta, ("RDNOISE", "READNOIS", "RON"))
        mask = np.zeros(aligned.short.shape, bool)
        for ccd in (aligned.short, aligned.long):
            if ccd.mask is not None:
                mask |= np.asarray(ccd.mask, bool)
        x = np.asarray(aligned.short.data, dtype=np.float64) * scale_s
        y = np.asarray(aligned.long.data, dtype=np.float64) * scale_l * (t_short / t_long)
        mask |= ~np.isfinite(x) | ~np.isfinite(y)
        pairs.append(_measured(np.where(mask, 0.0, x), np.where(mask, 0.0, y), mask,
                               ratio=float(t_long / t_short), exptime=float(t_short),
                               read_noise=float(ron or 0.0), source=f"pair:{row['short']}"))
    return pairs


class MeasuredPairs:
    """
    Random crops of measured pairs, for `~astro_unet.training.PairDataset`.

    Pairs are picked with probability proportional to their number of valid
    pixels; input and target are cropped (and flipped or rotated) alike.

    Parameters
    ----------
    pairs : sequence of `~astro_unet.training.Pair`
        Whole-image pairs (`repeated_exposure_pairs`, `pair_table_pairs`).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.training import MeasuredPairs, repeated_exposure_pairs
    >>> rng = np.random.default_rng(0)
    >>> frames = [rng.poisson(100.0, (64, 64)) for _ in range(3)]
    >>> measured = MeasuredPairs(repeated_exposure_pairs(frames, exptime=5.0, read_noise=3.0))
    >>> p = measured.pair(np.random.default_rng(1), size=32)
    >>> p.input.shape, p.ratio, p.noiseless_target
    ((32, 32), 2.0, False)
    """

    def __init__(self, pairs):
        self.pairs = list(pairs)
        if not self.pairs:
            raise ValueError("MeasuredPairs needs at least one pair.")
        w = np.array([np.sum(~p.mask) for p in self.pairs], dtype=float)
        if not w.sum() > 0:
            raise ValueError("the measured pairs have no valid pixel.")
        self.weights = w / w.sum()

    def __len__(self):
        return len(self.pairs)

    def pair(self, rng, *, size, augment=True, max_bad_fraction=0.1):
        """
        One random crop as a `~astro_unet.training.Pair` (electrons of the short exposure).

        Parameters
        ----------
        rng : `numpy.random.Generator`
            Random generator of the choice, the position and the orientation.
        size : int
            Crop side (pixels).
        augment : bool, optional
            A random flip / 90-degree rotation, the same for input and target.
        max_bad_fraction : float, optional
            Largest fraction of bad pixels in the crop.
        """

        m = self.pairs[int(rng.choice(len(self.pairs), p=self.weights))]
        crops, masks, corners = random_crops(m.input, m.mask, size=size, rng=rng,
                                             max_bad_fraction=max_bad_fraction)
        y, x = corners[0]
        x_crop, mask = crops[0], masks[0]
        target = m.target[y:y + size, x:x + size]
        if augment:
            x_crop, target, mask = dihedral_augment(x_crop, target, mask, rng=rng)
        return dataclasses.replace(m, input=np.ascontiguousarray(x_crop, dtype=np.float32),
                                   target=np.ascontiguousarray(target, dtype=np.float32),
                                   mask=np.ascontiguousarray(mask))
