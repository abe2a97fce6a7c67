# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Training pairs: a noisy short exposure and its target, made on the fly.

Synthetic (`synthetic_pair`) and real (`real_pair`) pairs, both made with
`astro_unet.simulate_short_exposure`; `network_arrays` maps a pair into the
network's space exactly as `~astro_unet.denoise_ccd` does;
`schedule_ratio` draws the ratios; `PairDataset` mixes the sources.  The
noise budget of a pair and the schedules are described in
:ref:`training_pairs`.
"""

import dataclasses
import hashlib
import json
import math
import os

import numpy as np
import astropy.units as u
from astropy.nddata import CCDData

from ..simulate import DETECTOR_PRESETS, simulate_short_exposure
from .config import RATIO_SCHEDULES, DataConfig
from .data import dihedral_augment, random_crops


# pytest-doctestplus: these examples render synthetic scenes (GalSim)
__doctest_requires__ = {("SyntheticScenePool", "PairDataset"): ["galsim"]}

__all__ = [
    "Pair",
    "schedule_ratio",
    "draw_exposure",
    "synthetic_pair",
    "real_pair",
    "network_arrays",
    "SyntheticScenePool",
    "PairDataset",
]

#: Seed-stream tags, so that the random numbers of different purposes never collide.
_STREAM_GROUP = 1
_STREAM_NOISE = 2
_STREAM_POOL = 3

#: Read noise / dark current of the synthetic instruments (HST: the presets).
_HST_PRESET = {"wfc3_uvis": "wfc3_uvis", "acs_wfc": "acs_wfc"}


@dataclasses.dataclass
class Pair:
    """
    One training pair, in electrons collected during the *short* exposure.

    Attributes
    ----------
    input : `numpy.ndarray`
        float32 noisy short exposure (electrons).
    target : `numpy.ndarray`
        float32 target: the long exposure divided by ``ratio`` (electrons
        expected in the short exposure, with the long exposure's quality).
    mask : `numpy.ndarray`
        bool, True for pixels without valid data.
    ratio : float
        Exposure-time ratio ``t_long / t_short``.
    exptime : float
        Short exposure time (s).
    read_noise : float
        Read noise of the simulated short exposure (electrons).
    dark_current : float
        Dark current (e-/s) of the simulation.
    sky : float
        Sky of the long exposure (electrons per pixel), present in the data
        or (``sky_subtracted``) subtracted.
    sky_subtracted : bool
        Whether the sky was subtracted.
    source : str
        ``"synthetic:<instrument>"``, ``"real:<path>"``, or for pairs with
        real noise (`~astro_unet.training.MeasuredPairs`)
        ``"repeated:<first frame>:<k>"`` or ``"pair:<short file>"``.
    noiseless_target : bool
        True for synthetic pairs.
    """

    input: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    ratio: float
    exptime: float
    read_noise: float
    dark_current: float
    sky: float
    sky_subtracted: bool
    source: str
    noiseless_target: bool


def _loguniform(rng, lo, hi):
    lo, hi = float(lo), float(hi)
    if lo <= 0 or lo == hi:
        return float(rng.uniform(lo, hi)) if lo != hi else lo
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def schedule_ratio(index, *, schedule, seed=0, epoch=0, paper_ratios=(2.0, 3.0, 4.0, 5.0),
                   ratio_range=(1.5, 10.0)):
    """
    The exposure-time ratio of sample ``index`` and the crop it belongs to.

    Samples come in groups of ``len(paper_ratios)`` consecutive indices.  In
    the ``"paper"`` schedule the samples of a group share one crop (same
    scene, position, orientation, exposure time and sky) and take the ratios
    of ``paper_ratios`` in order, each with its own noise draw.  In the
    ``"continuous"`` schedule every sample has its own crop and a ratio drawn
    log-uniformly from ``ratio_range``.  ``"mixed"``: each group is one or
    the other with equal chance.  Everything depends only on ``(seed,
    epoch, index)``.

    Parameters
    ----------
    index : int
        Sample index (>= 0).
    schedule : {"paper", "continuous", "mixed"}
    seed, epoch : int
        Seeds.
    paper_ratios : sequence of float
        Ratios of the paper schedule.
    ratio_range : (float, float)
        Range of the continuous schedule.

    Returns
    -------
    crop_key : tuple of int
        Identifies the crop: samples with equal keys share it.
    ratio : float

    Examples
    --------
    >>> from astro_unet.training import schedule_ratio
    >>> [schedule_ratio(i, schedule="paper")[1] for i in range(6)]
    [2.0, 3.0, 4.0, 5.0, 2.0, 3.0]
    >>> schedule_ratio(0, schedule="paper")[0] == schedule_ratio(3, schedule="paper")[0]
    True
    >>> 1.5 <= schedule_ratio(7, schedule="continuous")[1] <= 10.0
    True
    """
    if schedule not in RATIO_SCHEDULES:
        raise ValueError(f"schedule must be one of {RATIO_SCHEDULES}, got {schedule!r}.")
    index = int(index)
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}.")
    n = len(paper_ratios)
    group, position = divmod(index, n)
    if schedule == "mixed":
        g = np.random.default_rng([int(seed), int(epoch), _STREAM_GROUP, group, 0])
        schedule = "paper" if g.random() < 0.5 else "continuous"
    if schedule == "paper":
        return (0, group), float(paper_ratios[position])
    g = np.random.default_rng([int(seed), int(epoch), _STREAM_GROUP, index, 1])
    return (1, index), _loguniform(g, *ratio_range)


def draw_exposure(instrument, rng, data=None):
    """
    Draw the observing conditions of a synthetic long exposure.

    Parameters
    ----------
    instrument : {"wfc3_uvis", "acs_wfc", "ground"}
    rng : `numpy.random.Generator`
    data : `~astro_unet.training.DataConfig`, optional
        Ranges (default: `DataConfig` defaults).

    Returns
    -------
    conditions : dict
        ``t_long`` (s), ``sky_rate`` (e-/s/pixel), ``sky_subtracted``,
        ``read_noise`` (e-), ``dark_current`` (e-/s).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.training import draw_exposure
    >>> c = draw_exposure("wfc3_uvis", np.random.default_rng(0))
    >>> 60 <= c["t_long"] <= 5000, c["read_noise"]
    (True, 3.1)
    """
    data = data or DataConfig()
    t_long = _loguniform(rng, *data.t_long)
    lo, hi = data.sky.get(instrument, (0.0, 0.0))
    sky = _loguniform(rng, lo, hi) if hi > 0 else 0.0
    sky_sub = bool(rng.random() < data.sky_subtracted_probability.get(instrument, 0.5))
    if instrument in _HST_PRESET:
        preset = DETECTOR_PRESETS[_HST_PRESET[instrument]]
        ron, dark = float(preset.read_noise), float(preset.dark_current)
    else:
        ron, dark = float(rng.uniform(*data.ground_read_noise)), 0.0
    return {"t_long": t_long, "sky_rate": sky, "sky_subtracted": sky_sub,
            "read_noise": ron, "dark_current": dark}


def _sky_plane(shape, level, rng, gradient=0.1):
    """A sky of mean ``level`` with a random linear gradient (up to +-gradient)."""
    ny, nx = shape
    gy, gx = rng.uniform(-gradient, gradient, 2)
    yy = (np.arange(ny) - (ny - 1) / 2.0)[:, None] / max(ny, 1)
    xx = (np.arange(nx) - (nx - 1) / 2.0)[None, :] / max(nx, 1)
    return np.clip(level * (1.0 + 2.0 * gy * yy + 2.0 * gx * xx), 0.0, None)


def synthetic_pair(truth, *, ratio, t_long, sky_rate=0.0, sky_subtracted=True, read_noise,
                   dark_current=0.0, rng, source="synthetic"):
    """
    A pair from a noiseless scene (see :ref:`training_pairs`).

    Parameters
    ----------
    truth : array-like
        Noiseless scene in electron/s per pixel (sources; no sky).
    ratio : float
        Exposure-time ratio ``r > 1``.
    t_long : float
        Long exposure time (s).
    sky_rate : float
        Sky in electron/s per pixel.
    sky_subtracted : bool
        True: the sky is subtracted from the images (its photon noise stays);
        False: it is part of the image (and of the target), with a small
        random gradient.
    read_noise : float
        Read noise of the short exposure (electrons).
    dark_current : float
        Dark current (e-/s).
    rng : `numpy.random.Generator`
        Random generator of the noise (and of the sky gradient).
    source : str
        Recorded in the pair.

    Returns
    -------
    pair : `Pair`
        ``target = truth * t_long / ratio`` (plus the sky if present).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.training import synthetic_pair
    >>> truth = np.full((32, 32), 0.5)                       # e-/s
    >>> p = synthetic_pair(truth, ratio=2.0, t_long=400.0, read_noise=3.0,
    ...                    rng=np.random.default_rng(0))
    >>> float(p.target[0, 0]), p.exptime                      # 0.5 * 400 / 2
    (100.0, 200.0)
    >>> bool(abs(p.input.mean() - 100.0) < 2.0)
    True
    """
    truth = np.asarray(truth, dtype=np.float64)
    sky_e = float(sky_rate) * float(t_long)
    if sky_subtracted or sky_e == 0:
        long_expect = truth * t_long
        sky_arg = sky_e if sky_e > 0 else None
    else:
        long_expect = (truth + _sky_plane(truth.shape, sky_rate, rng)) * t_long
        sky_arg = None
    ccd = CCDData(long_expect, unit=u.electron, meta={"EXPTIME": float(t_long)})
    short = simulate_short_exposure(ccd, ratio, read_noise=read_noise,
                                    dark_current=dark_current, sky=sky_arg, seed=rng)
    return Pair(
        input=np.asarray(short.data, dtype=np.float32),
        target=(long_expect / ratio).astype(np.float32),
        mask=np.zeros(truth.shape, dtype=bool),
        ratio=float(ratio), exptime=float(t_long) / float(ratio),
        read_noise=float(read_noise), dark_current=float(dark_current), sky=sky_e,
        sky_subtracted=bool(sky_subtracted), source=source, noiseless_target=True)


def real_pair(crop, *, mask=None, exptime, ratio, read_noise, dark_current=0.0, sky_level=0.0,
              sky_subtracted=False, rng, source="real"):
    """
    A pair from a crop of a real image (a noisy long exposure, electrons).

    Parameters
    ----------
    crop : array-like
        Electrons collected in ``exptime`` seconds.
    mask : array-like of bool, optional
        Bad pixels (no noise added; excluded from the loss).
    exptime : float
        Exposure time of the crop (s).
    ratio : float
        Exposure-time ratio ``r > 1``.
    read_noise : float
        Read noise of the simulated short exposure (electrons).
    dark_current : float
        Dark current (e-/s).
    sky_level : float
        Sky per pixel (electrons of the long exposure): added back before
        the Poisson draw when ``sky_subtracted``; ignored otherwise (it is
        in the data).
    sky_subtracted : bool
        Whether the sky was subtracted from ``crop``.
    rng : `numpy.random.Generator`
        Random generator of the noise.
    source : str
        Recorded in the pair.

    Returns
    -------
    pair : `Pair`
        ``target = crop / ratio``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.training import real_pair
    >>> rng = np.random.default_rng(1)
    >>> crop = rng.poisson(400.0, (32, 32)).astype(float)     # a 100 s frame
    >>> p = real_pair(crop, exptime=100.0, ratio=4.0, read_noise=3.0, rng=rng)
    >>> p.exptime, bool(np.allclose(p.target, crop / 4))
    (25.0, True)
    """
    crop = np.asarray(crop, dtype=np.float64)
    bad = np.zeros(crop.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    ccd = CCDData(crop, unit=u.electron, mask=bad if bad.any() else None,
                  meta={"EXPTIME": float(exptime)})
    sky_arg = float(sky_level) if sky_subtracted and sky_level > 0 else None
    short = simulate_short_exposure(ccd, ratio, read_noise=read_noise,
                                    dark_current=dark_current, sky=sky_arg, seed=rng)
    return Pair(
        input=np.asarray(short.data, dtype=np.float32),
        target=(crop / ratio).astype(np.float32),
        mask=bad.copy(),
        ratio=float(ratio), exptime=float(exptime) / float(ratio),
        read_noise=float(read_noise), dark_current=float(dark_current),
        sky=float(sky_level), sky_subtracted=bool(sky_subtracted), source=source,
        noiseless_target=False)


def network_arrays(pair, *, norm, cond_names):
    """
    A pair in the network's space, built as `~astro_unet.denoise_ccd` builds its input.

    Calls ``astro_unet._normalization.network_input`` on the input (normalization,
    bad-pixel filling, noise-scaled transform, conditioning vector) and
    ``astro_unet._normalization.network_target`` on the target with the same
    context.

    Parameters
    ----------
    pair : `Pair`
    norm : dict
        The model's normalization (see `astro_unet.denoise`).
    cond_names : sequence of str
        The network's conditioning names.

    Returns
    -------
    x : `numpy.ndarray`
        float32 (H, W) network input.
    cond : `numpy.ndarray`
        float32 (n_cond,) conditioning vector.
    target : `numpy.ndarray`
        float32 (H, W) transformed target.
    valid : `numpy.ndarray`
        float32 (H, W): 1 where input and target are usable.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.training import network_arrays, synthetic_pair
    >>> p = synthetic_pair(np.full((16, 16), 1.0), ratio=2.0, t_long=100.0,
    ...                    read_noise=3.0, rng=np.random.default_rng(0))
    >>> norm = {"unit": "electron", "transform": "linear", "scale": 10.0}
    >>> x, cond, t, valid = network_arrays(p, norm=norm, cond_names=["ratio"])
    >>> float(t[0, 0]), cond.tolist(), float(valid.min())     # 100 e / 2 / 10
    (5.0, [2.0], 1.0)
    """
    from .._normalization import network_input, network_target

    bad = pair.mask | ~np.isfinite(pair.input)
    x, cond, ctx = network_input(pair.input, norm=norm, ratio=pair.ratio, exptime=pair.exptime,
                                 read_noise=pair.read_noise, cond_names=tuple(cond_names),
                                 bad=bad if bad.any() else None)
    target = network_target(np.where(bad, 0.0, pair.target), norm=norm, ctx=ctx)
    valid = ~bad & np.isfinite(target) & np.isfinite(x)
    target = np.where(valid, target, 0.0).astype(np.float32)
    x = np.where(np.isfinite(x), x, 0.0).astype(np.float32)
    return x, np.asarray(cond, dtype=np.float32), target, valid.astype(np.float32)


# ---------------------------------------------------------------------------
# synthetic scene pool


def _render_one(args):
    """Render scene ``j`` of a pool (a picklable top-level function for workers)."""
    from .synthetic import SceneConfig, render_scene

    seed, j, size, instrument, empty = args
    if empty:
        return np.zeros((size, size), dtype=np.float32), 0, 0
    rng = np.random.default_rng([int(seed), _STREAM_POOL, int(j), 1])
    config = SceneConfig.for_instrument(instrument, background=(0.0, 0.0))
    truth, info = render_scene((size, size), config=config, rng=rng)
    return truth.astype(np.float32), len(info["stars"]), len(info["galaxies"])


class SyntheticScenePool:
    """
    Noiseless synthetic scenes rendered once, for many training crops.

    Scene ``j`` is rendered with `~astro_unet.training.render_scene` from a
    generator seeded with ``(seed, j)``, without sky (the pair generator adds
    the sky); its instrument is drawn from ``instruments``; a fraction
    ``empty_fraction`` of the scenes are blank (sky only).

    Parameters
    ----------
    n : int
        Number of scenes.
    size : int, optional
        Side of the scenes (pixels).
    instruments : dict, optional
        ``{instrument: weight}`` (default: the `DataConfig` mix).
    empty_fraction : float, optional
        Fraction of blank scenes.
    seed : int, optional
        Seed.
    cache : str or path-like, optional
        A ``.npz`` file: loaded when it holds this pool (same parameters),
        else written after rendering.
    workers : int, optional
        Processes rendering in parallel (1: in this process).

    Attributes
    ----------
    scenes : list of `numpy.ndarray`
        float32 (size, size) scenes in electron/s.
    instruments : list of str
    description : dict
        Parameters and counts (for the training record).

    Examples
    --------
    >>> from astro_unet.training import SyntheticScenePool
    >>> pool = SyntheticScenePool(2, size=48, instruments={"wfc3_uvis": 1.0}, seed=3)
    >>> len(pool), pool.scenes[0].shape, pool.instruments
    (2, (48, 48), ['wfc3_uvis', 'wfc3_uvis'])
    """

    def __init__(self, n, *, size=256, instruments=None, empty_fraction=0.05, seed=0, cache=None,
                 workers=1):
        n, size = int(n), int(size)
        if n < 1 or size < 8:
            raise ValueError(f"a pool needs n >= 1 scenes of size >= 8, got {n}, {size}.")
        instruments = dict(instruments or DataConfig().instruments)
        names = sorted(k for k, v in instruments.items() if v > 0)
        if not names:
            raise ValueError("instruments needs at least one positive weight.")
        weights = np.array([instruments[k] for k in names], dtype=float)
        weights /= weights.sum()
        rng = np.random.default_rng([int(seed), _STREAM_POOL, 0])
        plan = []
        for j in range(n):
            inst = names[int(rng.choice(len(names), p=weights))]
            empty = bool(rng.random() < empty_fraction)
            plan.append((int(seed), j, size, inst, empty))
        self.instruments = [p[3] for p in plan]
        self.empty = [p[4] for p in plan]
        key = self._key(plan)
        self.description = {"n_scenes": n, "size": size, "seed": int(seed),
                            "instruments": {k: float(instruments[k]) for k in names},
                            "empty_fraction": float(empty_fraction), "key": key}
        loaded = self._load(cache, key, n)
        if loaded is not None:
            scenes, counts = loaded
            self.description["n_stars"], self.description["n_galaxies"] = counts
        else:
            if workers > 1 and n > 1:
                import concurrent.futures
                import multiprocessing

                ctx = multiprocessing.get_context("spawn")
                with concurrent.futures.ProcessPoolExecutor(min(workers, n),
                                                            mp_context=ctx) as ex:
                    results = list(ex.map(_render_one, plan))
            else:
                results = [_render_one(p) for p in plan]
            scenes = [r[0] for r in results]
            self.description["n_stars"] = int(sum(r[1] for r in results))
            self.description["n_galaxies"] = int(sum(r[2] for r in results))
            if cache is not None:
                self._save(cache, key, scenes, (self.description["n_stars"],
                                                self.description["n_galaxies"]))
        self.scenes = scenes

    @staticmethod
    def _key(plan):
        try:
            import galsim
            gver = galsim.__version__
        except ImportError:  # pragma: no cover - rendering fails later anyway
            gver = "none"
        text = json.dumps([plan, gver])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @staticmethod
    def _load(cache, key, n):
        if cache is None or not os.path.isfile(cache):
            return None
        try:
            with np.load(cache) as f:
                if str(f["key"]) != key:
                    return None
                stack = f["scenes"]
                counts = tuple(int(c) for c in f["counts"])
        except (OSError, KeyError, ValueError):
            return None
        if len(stack) != n:
            return None
        return [np.array(s, dtype=np.float32) for s in stack], counts

    @staticmethod
    def _save(cache, key, scenes, counts):
        cache = os.fspath(cache)
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        tmp = cache + f".tmp{os.getpid()}.npz"
        np.savez(tmp, key=np.array(key), scenes=np.stack(scenes), counts=np.array(counts))
        os.replace(tmp, cache)

    def __len__(self):
        return len(self.scenes)


# ---------------------------------------------------------------------------
# the dataset


class PairDataset:
    """
    Training pairs from synthetic scenes and real images, in the network's space.

    A map-style dataset (``len`` and integer indexing) for
    `torch.utils.data.DataLoader`.  Item ``index`` depends only on ``(seed,
    epoch, index)``: the ratio and crop grouping come from `schedule_ratio`;
    the crop (source, scene or image, position, orientation, exposure time,
    sky, read noise) from a generator seeded with the crop key, the noise
    from one seeded with the index.  So the data are reproducible and
    independent of the number of loader workers or processes.

    Parameters
    ----------
    norm : dict
        The model's normalization.
    cond_names : sequence of str
        The network's conditioning names.
    data : `~astro_unet.training.DataConfig`, optional
        Crop size, synthetic fraction, exposure ranges, ratio schedule,
        augmentation (default: `DataConfig` defaults).
    pool : `SyntheticScenePool`, optional
        Needed when ``data.synthetic_fraction > 0``.
    real : `~astro_unet.training.RealImageDataset`, optional
        Real images (its ``images`` and ``rows``); needed when
        ``data.synthetic_fraction < 1``.
    measured : `~astro_unet.training.MeasuredPairs`, optional
        Pairs with real noise, drawn for a fraction ``data.measured_fraction``
        of the items (their ratio is the pair's own, not the schedule's).
    seed : int, optional
        Seed.
    length : int, optional
        Nominal length (indices may go beyond it: items are generated).

    Examples
    --------
    >>> from astro_unet.training import DataConfig, PairDataset, SyntheticScenePool
    >>> data = DataConfig(crop_size=32, synthetic_fraction=1.0, scene_size=48)
    >>> pool = SyntheticScenePool(2, size=48, seed=0)
    >>> ds = PairDataset(norm={"unit": "electron", "transform": "asinh", "scale": "noise"},
    ...                  cond_names=["ratio", "log_noise"], data=data, pool=pool, seed=1)
    >>> x, cond, target, valid = ds[0]
    >>> tuple(x.shape), tuple(cond.shape), tuple(target.shape), tuple(valid.shape)
    ((1, 32, 32), (2,), (1, 32, 32), (1, 32, 32))
    """

    def __init__(self, *, norm, cond_names, data=None, pool=None, real=None, measured=None,
                 seed=0, length=1 << 30):
        self.data = data or DataConfig()
        self.norm = dict(norm)
        self.cond_names = tuple(cond_names)
        self.pool = pool
        self.real = real
        self.measured = measured
        if float(self.data.measured_fraction) > 0 and not measured:
            raise ValueError("data.measured_fraction > 0 needs measured pairs (measured=...).")
        self.seed = int(seed)
        self.length = int(length)
        self.epoch = 0
        frac = float(self.data.synthetic_fraction)
        simulated = float(self.data.measured_fraction) < 1     # some items are simulated
        if simulated and (real is None or not getattr(real, "images", None)):
            if frac < 1:
                raise ValueError("synthetic_fraction < 1 needs real images (real=...).")
        if simulated and frac > 0 and (pool is None or len(pool) == 0):
            raise ValueError("synthetic_fraction > 0 needs a SyntheticScenePool (pool=...).")
        size = self.data.crop_size
        if simulated and frac > 0 and min(pool.scenes[0].shape) < size:
            raise ValueError(f"pool scenes ({pool.scenes[0].shape}) are smaller than the "
                             f"crop size {size}.")
        if real is not None and getattr(real, "images", None):
            w = np.asarray(real.weights, dtype=float)
            self._real_weights = w / w.sum()
        else:
            self._real_weights = None

    def set_epoch(self, epoch):
        """Select the epoch (changes every item)."""
        self.epoch = int(epoch)

    def __len__(self):
        return self.length

    def pair(self, index):
        """
        The `Pair` of item ``index`` (electrons; before the network transform).

        Returns
        -------
        pair : `Pair`
        """
        d = self.data
        key, ratio = schedule_ratio(index, schedule=d.ratio_schedule, seed=self.seed,
                                    epoch=self.epoch, paper_ratios=d.paper_ratios,
                                    ratio_range=d.ratio_range)
        crop_rng = np.random.default_rng([self.seed, self.epoch, _STREAM_GROUP, *key, 7])
        noise_rng = np.random.default_rng([self.seed, self.epoch, _STREAM_NOISE, int(index)])
        size = d.crop_size
        if d.measured_fraction > 0 and crop_rng.random() < d.measured_fraction:
            return self.measured.pair(crop_rng, size=size, augment=d.augment,
                                      max_bad_fraction=d.max_bad_fraction)
        if crop_rng.random() < d.synthetic_fraction:
            j = int(crop_rng.integers(len(self.pool)))
            scene = self.pool.scenes[j]
            inst = self.pool.instruments[j]
            ny, nx = scene.shape
            y = int(crop_rng.integers(0, ny - size + 1))
            x = int(crop_rng.integers(0, nx - size + 1))
            truth = scene[y:y + size, x:x + size]
            if d.augment:
                (truth,) = dihedral_augment(truth, rng=crop_rng)
            cond = draw_exposure(inst, crop_rng, d)
            return synthetic_pair(truth, ratio=ratio, t_long=cond["t_long"],
                                  sky_rate=cond["sky_rate"],
                                  sky_subtracted=cond["sky_subtracted"],
                                  read_noise=cond["read_noise"],
                                  dark_current=cond["dark_current"], rng=noise_rng,
                                  source=f"synthetic:{inst}")
        j = int(crop_rng.choice(len(self.real.images), p=self._real_weights))
        ccd, row = self.real.images[j], self.real.rows[j]
        crops, masks, _ = random_crops(ccd.data, ccd.mask, size=size, rng=crop_rng,
                                       max_bad_fraction=d.max_bad_fraction)
        crop, mask = crops[0], masks[0]
        if d.augment:
            crop, mask = dihedral_augment(crop, mask, rng=crop_rng)
        path = str(row["path"])
        return real_pair(crop, mask=mask, exptime=float(row["exposure_time"]), ratio=ratio,
                         read_noise=float(row["read_noise"]),
                         dark_current=real_dark_current(path),
                         sky_level=float(row["sky_level"]),
                         sky_subtracted=bool(row["sky_subtracted"]), rng=noise_rng,
                         source=f"real:{path}")

    def arrays(self, index):
        """Item ``index`` as numpy arrays ``(x, cond, target, valid)`` (see `network_arrays`)."""
        return network_arrays(self.pair(index), norm=self.norm, cond_names=self.cond_names)

    def __getitem__(self, index):
        import torch

        if index < 0:
            raise IndexError(index)
        x, cond, target, valid = self.arrays(index)
        return (torch.from_numpy(x[None]), torch.from_numpy(cond),
                torch.from_numpy(target[None]), torch.from_numpy(valid[None]))


def real_dark_current(path):
    """Dark current (e-/s) of the detector a real image comes from (0 when unknown)."""
    name = os.path.basename(path).lower()
    if "wfc3" in name:
        return float(DETECTOR_PRESETS["wfc3_uvis"].dark_current)
    if "acs" in name:
        return float(DETECTOR_PRESETS["acs_wfc"].dark_current)
    return 0.0
