# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Real training images: the exposure table, loading in electrons, crops and the dataset.

`read_exposure_table` reads the table that calibrates each image file
(shipped as ``exposures.ecsv``; the data are not in the repository),
`load_training_image` returns one image in electrons, `random_crops` and
`dihedral_augment` cut and turn crops, and `RealImageDataset` draws them
reproducibly for training.
"""

import os
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table

from .._logging import log_step, set_keyword
from .._validation import is_rate

__all__ = [
    "EXPOSURE_TABLE_COLUMNS",
    "default_data_dir",
    "read_exposure_table",
    "load_training_image",
    "random_crops",
    "dihedral_augment",
    "RealImageDataset",
]

#: Environment variable naming the directory of real training images.
DATA_DIR_ENV = "ASTRO_UNET_DATA"

#: Column names of the exposure table, in order.
EXPOSURE_TABLE_COLUMNS = (
    "path", "hdu", "weight_hdu", "unit", "zero_level", "bias_section",
    "trim_section", "saturation", "exposure_time", "exptime_source", "gain", "gain_source",
    "read_noise", "sky_level", "sky_subtracted", "noise_correlation", "split",
    "notes",
)

_SPLITS = ("train", "validation", "test", "realnoise", "excluded")


# ---------------------------------------------------------------------------
# The exposure table
# ---------------------------------------------------------------------------

def default_data_dir(data_dir=None):
    """
    Directory of the real training images.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Returned (as a `~pathlib.Path`) when given.

    Returns
    -------
    path : `~pathlib.Path`
        ``data_dir``, else the ``ASTRO_UNET_DATA`` environment variable.

    Raises
    ------
    ValueError
        Neither is set.

    Examples
    --------
    >>> from astro_unet.training import default_data_dir
    >>> default_data_dir("/tmp/mydata").name
    'mydata'
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        raise ValueError(
            f"No data directory: pass data_dir=... or set the {DATA_DIR_ENV} "
            "environment variable to the directory holding the FITS files."
        )
    return Path(data_dir)


def read_exposure_table(path=None):
    """
    Read the exposure table (default: the one shipped with the package).

    Parameters
    ----------
    path : str or path-like, optional
        An ECSV file with the columns of `EXPOSURE_TABLE_COLUMNS`.

    Returns
    -------
    table : `~astropy.table.Table`
        One row per image file; ``exposure_time`` in s, ``read_noise`` and
        ``sky_level`` in electron.  How it was made is in ``table.meta``.

    Raises
    ------
    ValueError
        A required column is missing or a split is unknown.

    Notes
    -----
    Training needs every image in electrons collected during the exposure,
    so that `~astro_unet.simulate_short_exposure` draws Poisson noise at the
    right level.  The table gives, for each image file, its unit, exposure
    time, gain, read noise, sky and split, and how each number was obtained
    (header keyword, ``NCOMBINE``, or an estimate from the image noise with
    `~astro_unet.training.estimate_gain_from_noise`).  The shipped table was
    made by ``scripts/make_exposure_table.py`` in the source repository.
    Its columns:

    ``path``, ``hdu``
        File (relative to the data directory) and HDU (index or name).
    ``weight_hdu``
        HDU of a weight map (pixels with weight <= 0 are masked), or ``""``.
    ``unit``
        Unit of the pixel values, as read or as inferred.
    ``zero_level``
        Value subtracted from the pixel values first (e.g. a ``PEDESTAL``).
    ``bias_section``, ``trim_section``
        FITS sections (raw frames): the median of the overscan is subtracted row
        by row (`ccdproc.subtract_overscan`) and the frame trimmed.
    ``saturation``
        Pixel values (as stored in the file) at or above which pixels are
        masked (saturated or replaced cores); 0 for none.
    ``exposure_time`` [s], ``exptime_source``
        Exposure time and where it came from.
    ``gain`` [electron / unit], ``gain_source``
        ``electrons = (data - zero_level) * gain`` for counts-like units, and
        ``* exposure_time`` as well for rate units (``electron/s``: gain 1).
    ``read_noise`` [electron]
        Effective read noise per pixel of the image (all reads together).
    ``sky_level`` [electron]
        Background per pixel: present in the image if not ``sky_subtracted``,
        else the level that was subtracted (estimated), which a simulation can
        add back before the Poisson draw (``sky=`` of
        `~astro_unet.simulate_short_exposure`).
    ``sky_subtracted``
        Whether the background was removed from the pixel values.
    ``noise_correlation``
        Ratio of the variance of a sum over many pixels to the sum of the
        per-pixel variances (1 for white noise; about 2-4 for drizzled images).
    ``split``
        ``train``, ``validation``, ``test`` (kept out of training: benchmark
        fields), ``realnoise`` (repeated frames for the real-noise check) or
        ``excluded`` (not usable; ``notes`` says why).
    ``notes``
        Free text: caveats and cross-checks.

    Examples
    --------
    >>> from astro_unet.training import read_exposure_table
    >>> table = read_exposure_table()
    >>> sorted(set(table["split"].tolist()))
    ['excluded', 'realnoise', 'test', 'train', 'validation']
    >>> table["exposure_time"].unit
    Unit("s")
    """
    if path is None:
        ref = resources.files("astro_unet.training") / "exposures.ecsv"
        with resources.as_file(ref) as p:
            table = Table.read(p, format="ascii.ecsv")
    else:
        table = Table.read(path, format="ascii.ecsv")
    missing = [c for c in EXPOSURE_TABLE_COLUMNS if c not in table.colnames]
    if missing:
        raise ValueError(f"Exposure table lacks the columns {missing}.")
    bad = sorted(set(table["split"]) - set(_SPLITS))
    if bad:
        raise ValueError(f"Unknown split(s) {bad}; expected one of {_SPLITS}.")
    return table


def _hdu_key(value):
    value = str(value).strip()
    return int(value) if value.lstrip("-").isdigit() else value


def _electron_factor(row):
    """Electrons per pixel-value unit for ``row``."""
    factor = float(row["gain"])
    if is_rate(u.Unit(str(row["unit"]), parse_strict="silent")):
        factor *= float(row["exposure_time"])
    return factor


def _read_raw(row, data_dir):
    path = Path(data_dir) / str(row["path"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        with fits.open(path) as hdul:
            hdu = hdul[_hdu_key(row["hdu"])]
            data = np.array(hdu.data, dtype=np.float64)
            header = hdu.header.copy()
            weight = None
            wkey = str(row["weight_hdu"]).strip()
            if wkey and wkey != "--":
                weight = np.array(hdul[_hdu_key(wkey)].data, dtype=np.float64)
    return data, header, weight


def load_training_image(row, data_dir=None):
    """
    Load one image of the exposure table in electrons.

    The pixel values are converted with the table's calibration:
    ``(data - zero_level)``, overscan subtracted and trimmed when
    ``bias_section``/``trim_section`` are set, times ``gain`` (and times
    ``exposure_time`` for rate units).  Masked: non-finite pixels, pixels
    exactly 0 in the file (drizzle padding, dead pixels), pixels at or above
    ``saturation`` and pixels with weight <= 0 when a weight HDU is given.

    Parameters
    ----------
    row : `~astropy.table.Row` or dict
        A row of `read_exposure_table`.
    data_dir : str or path-like, optional
        Directory the ``path`` column is relative to (default: the
        ``ASTRO_UNET_DATA`` environment variable).

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        Unit electron (the counts collected during ``EXPTIME``); masked
        pixels hold 0.  Header: the file's, plus ``EXPTIME``, ``GAIN`` (1),
        ``RDNOISE``, ``SKYLEVEL``, ``SKYSUB``, ``NOISECOR``, ``SPLIT``.

    Raises
    ------
    ValueError
        No data directory, or the file's unit cannot be converted.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from astro_unet.training import load_training_image
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> fits.writeto(os.path.join(d, "a.fits"), np.full((4, 4), 0.5, "f4"))
    >>> row = dict(path="a.fits", hdu="0", weight_hdu="", unit="electron/s",
    ...            zero_level=0.0, bias_section="", trim_section="", saturation=0.0,
    ...            exposure_time=100.0, gain=1.0, read_noise=3.0, sky_level=0.0,
    ...            sky_subtracted=True, noise_correlation=1.0, split="train")
    >>> ccd = load_training_image(row, d)
    >>> ccd.unit, float(ccd.data[0, 0]), ccd.header["EXPTIME"]
    (Unit("electron"), 50.0, 100.0)
    """
    data_dir = default_data_dir(data_dir)
    data, header, weight = _read_raw(row, data_dir)
    bad = ~np.isfinite(data) | (data == 0)
    if weight is not None:
        bad |= ~(weight > 0)
    saturation = float(row["saturation"])
    if saturation > 0:
        with np.errstate(invalid="ignore"):
            bad |= data >= saturation
    data = data - float(row["zero_level"])
    bias_section = str(row["bias_section"]).strip()
    trim_section = str(row["trim_section"]).strip()
    if bias_section and bias_section != "--":
        import ccdproc

        raw = CCDData(data, unit="adu", mask=bad)
        raw = ccdproc.subtract_overscan(raw, fits_section=bias_section, median=True,
                                        overscan_axis=1, add_keyword=False)
        if trim_section and trim_section != "--":
            raw = ccdproc.trim_image(raw, fits_section=trim_section, add_keyword=False)
        data, bad = np.asarray(raw.data, dtype=float), np.asarray(raw.mask, dtype=bool)
    elif trim_section and trim_section != "--":
        import ccdproc

        raw = ccdproc.trim_image(CCDData(data, unit="adu", mask=bad),
                                 fits_section=trim_section, add_keyword=False)
        data, bad = np.asarray(raw.data, dtype=float), np.asarray(raw.mask, dtype=bool)
    try:
        factor = _electron_factor(row)
    except ValueError as exc:
        raise ValueError(f"{row['path']}: unit {row['unit']!r} not understood ({exc}).") from None
    electrons = np.where(bad, 0.0, data * factor).astype(np.float32)

    for key in ("BUNIT", "BSCALE", "BZERO"):
        header.remove(key, ignore_missing=True, remove_all=True)
    keywords = {
        "EXPTIME": (float(row["exposure_time"]), "[s] exposure time (exposure table)"),
        "GAIN": (1.0, "[e-/e-] data are in electrons"),
        "RDNOISE": (float(row["read_noise"]), "[e-] effective read noise"),
        "SKYLEVEL": (float(row["sky_level"]), "[e-] sky per pixel (present or subtracted)"),
        "SKYSUB": (bool(row["sky_subtracted"]), "sky subtracted from the data"),
        "NOISECOR": (float(row["noise_correlation"]), "aperture/pixel noise variance ratio"),
        "SPLIT": (str(row["split"]), "training split"),
    }
    log_step(header, f"load_training_image({row['path']}, factor={factor:.6g} e-/unit)",
             keywords)
    set_keyword(header, "SRCUNIT", str(row["unit"]), "unit of the file's pixel values")
    return CCDData(electrons, unit=u.electron, mask=bad, meta=header)


# ---------------------------------------------------------------------------
# Crops and augmentation
# ---------------------------------------------------------------------------

def random_crops(image_e, mask=None, *, size, rng, n=1, max_bad_fraction=0.1,
                 max_tries=200):
    """
    Random square crops that are mostly valid data.

    A crop is rejected when more than ``max_bad_fraction`` of its pixels are
    masked, non-finite or exactly zero (the paper rejected crops with more
    than 10 % zeros, the drizzle padding).

    Parameters
    ----------
    image_e : array-like or `~astropy.nddata.CCDData`
        2-D image (its mask is used when ``mask`` is None).
    mask : array-like of bool, optional
        True for bad pixels.
    size : int
        Crop side in pixels (at most the image's smaller side).
    rng : `numpy.random.Generator` or int
        Random generator or seed.
    n : int, optional
        Number of crops.
    max_bad_fraction : float, optional
        Largest accepted fraction of bad pixels per crop.
    max_tries : int, optional
        Attempts per crop before giving up.

    Returns
    -------
    crops : `numpy.ndarray`
        float32 array of shape ``(n, size, size)``.
    masks : `numpy.ndarray`
        bool array of the same shape, True for bad pixels.
    corners : `numpy.ndarray`
        int array ``(n, 2)`` of the (y, x) lower corners.

    Raises
    ------
    ValueError
        The image is smaller than ``size`` or no acceptable crop was found.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.training import random_crops
    >>> img = np.ones((64, 64)); img[:, :40] = 0      # zero padding on the left
    >>> crops, masks, corners = random_crops(img, size=16, rng=0, n=3)
    >>> crops.shape, bool((corners[:, 1] >= 40 - 1).all())
    ((3, 16, 16), True)
    """
    if isinstance(image_e, CCDData):
        if mask is None and image_e.mask is not None:
            mask = image_e.mask
        image_e = image_e.data
    data = np.asarray(image_e)
    if data.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {data.shape}.")
    size = int(size)
    ny, nx = data.shape
    if size < 1 or size > min(ny, nx):
        raise ValueError(f"Crop size {size} does not fit the image of shape {data.shape}.")
    if not 0 <= max_bad_fraction <= 1:
        raise ValueError("max_bad_fraction must be in [0, 1].")
    rng = np.random.default_rng(rng)
    bad = ~np.isfinite(data) | (data == 0)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    # summed-area table: bad count of any crop in O(1)
    sat = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(bad, axis=0), axis=1)
    limit = max_bad_fraction * size * size
    crops = np.empty((n, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=bool)
    corners = np.empty((n, 2), dtype=int)
    for i in range(n):
        for _ in range(max_tries):
            y = int(rng.integers(0, ny - size + 1))
            x = int(rng.integers(0, nx - size + 1))
            nbad = sat[y + size, x + size] - sat[y, x + size] - sat[y + size, x] + sat[y, x]
            if nbad <= limit:
                break
        else:
            raise ValueError(
                f"No crop of size {size} with at most {max_bad_fraction:.0%} bad pixels "
                f"found in {max_tries} tries."
            )
        sl = (slice(y, y + size), slice(x, x + size))
        crops[i] = np.where(bad[sl], 0.0, data[sl])
        masks[i] = bad[sl]
        corners[i] = (y, x)
    return crops, masks, corners


def dihedral_augment(*arrays, rng=None, k=None, flip=None):
    """
    Apply one random flip / 90-degree rotation to several arrays alike.

    These eight symmetries keep the physics (pixel values, noise statistics,
    PSF shapes up to orientation); no interpolation is involved.

    Parameters
    ----------
    *arrays : `numpy.ndarray`
        Arrays of the same shape in their last two axes.
    rng : `numpy.random.Generator` or int, optional
        Random generator or seed (used for ``k``/``flip`` not given).
    k : int, optional
        Number of 90-degree rotations (0-3).
    flip : bool, optional
        Flip the last axis before rotating.

    Returns
    -------
    augmented : tuple of `numpy.ndarray`
        Contiguous copies, in the order given.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_unet.training import dihedral_augment
    >>> a = np.arange(4).reshape(2, 2)
    >>> (b,) = dihedral_augment(a, k=1, flip=False)
    >>> b.tolist(), int(b.sum()) == int(a.sum())
    ([[1, 3], [0, 2]], True)
    """
    rng = np.random.default_rng(rng)
    if k is None:
        k = int(rng.integers(0, 4))
    if flip is None:
        flip = bool(rng.integers(0, 2))
    out = []
    for a in arrays:
        a = np.asarray(a)
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(np.rot90(a, k, axes=(-2, -1))))
    return tuple(out)


class RealImageDataset:
    """
    Random crops of the real images of one split, in electrons.

    A map-style dataset (``len`` and integer indexing), usable directly with
    ``torch.utils.data.DataLoader``.  Item ``i`` of epoch ``e`` is drawn
    from its own generator seeded with ``(seed, e, i)``, so the data are
    reproducible and independent of the number of loader workers.  Images
    are picked with probability proportional to their number of valid
    pixels; images smaller than ``size`` are skipped (listed in
    ``skipped``).

    Parameters
    ----------
    data_dir : str or path-like, optional
        Data directory (default: ``ASTRO_UNET_DATA``).
    table : `~astropy.table.Table` or path, optional
        Exposure table (default: the shipped one).
    split : str or sequence of str, optional
        Split(s) to use.
    size : int, optional
        Crop side in pixels.  The paper used 256, but most real HST images
        of the table are 160-281 pixels wide, hence the default 128.
    length : int, optional
        Number of items per epoch.
    seed : int, optional
        Base seed.
    augment : bool, optional
        Random flips / 90-degree rotations.
    max_bad_fraction : float, optional
        See `random_crops`.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from astropy.io import fits
    >>> from astropy.table import Table
    >>> from astro_unet.training import RealImageDataset, EXPOSURE_TABLE_COLUMNS
    >>> d = tempfile.mkdtemp()
    >>> fits.writeto(os.path.join(d, "a.fits"), np.full((40, 40), 2.0, "f4"))
    >>> row = ["a.fits", "0", "", "adu", 0.0, "", "", 0.0, 10.0, "header", 1.5, "header",
    ...        3.0, 0.0, False, 1.0, "train", ""]
    >>> table = Table(rows=[row], names=EXPOSURE_TABLE_COLUMNS)
    >>> ds = RealImageDataset(d, table=table, size=16, length=4, seed=1)
    >>> item = ds[0]
    >>> item["image"].shape, float(item["image"][0, 0]), item["exposure_time"]
    ((16, 16), 3.0, 10.0)
    """

    def __init__(self, data_dir=None, *, table=None, split="train", size=128, length=1024,
                 seed=0, augment=True, max_bad_fraction=0.1):
        if table is None or isinstance(table, (str, os.PathLike)):
            table = read_exposure_table(table)
        splits = (split,) if isinstance(split, str) else tuple(split)
        self.data_dir = default_data_dir(data_dir)
        self.size = int(size)
        self.length = int(length)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.max_bad_fraction = float(max_bad_fraction)
        self.epoch = 0
        self.rows = []
        self.images = []
        self.skipped = []
        weights = []
        for row in table:
            if str(row["split"]) not in splits:
                continue
            ccd = load_training_image(row, self.data_dir)
            if min(ccd.shape) < self.size:
                self.skipped.append(str(row["path"]))
                continue
            self.rows.append(row)
            self.images.append(ccd)
            weights.append(float((~ccd.mask).sum()))
        if not self.images:
            raise ValueError(f"No image of split {splits} is at least {self.size} pixels wide.")
        self.weights = np.asarray(weights) / np.sum(weights)

    def set_epoch(self, epoch):
        """Select the epoch (changes the crops drawn for every index)."""
        self.epoch = int(epoch)

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        j = int(rng.choice(len(self.images), p=self.weights))
        ccd, row = self.images[j], self.rows[j]
        crops, masks, _ = random_crops(ccd.data, ccd.mask, size=self.size, rng=rng,
                                       max_bad_fraction=self.max_bad_fraction)
        crop, mask = crops[0], masks[0]
        if self.augment:
            crop, mask = dihedral_augment(crop, mask, rng=rng)
        return {
            "image": crop,
            "mask": mask,
            "exposure_time": float(row["exposure_time"]),
            "read_noise": float(row["read_noise"]),
            "sky_level": float(row["sky_level"]),
            "sky_subtracted": bool(row["sky_subtracted"]),
            "noise_correlation": float(row["noise_correlation"]),
            "path": str(row["path"]),
        }
