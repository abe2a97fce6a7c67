# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
FITS in and out: read one image HDU as CCDData, write a result like its input file.

`read_ccd` reads an image HDU (the first with image data by default) with
the primary header's keywords visible; `write_like` writes a result with
the HDU structure of its input (see `write_like`), atomically and with the
user's permissions.  Errors are the library's (`FITSFileError`, a
`ValueError`; `FileNotFoundError`; `FileExistsError`); ``astro-unet``
turns them into flag advice.
"""

import os
import warnings

import numpy as np
import astropy.units as u
from astropy.io import fits

from ._utils import atomic_output, error_message

#: Header keywords of the processed HDU that no longer apply to new float data.
STALE_KEYWORDS = ("BSCALE", "BZERO", "BLANK", "CHECKSUM", "DATASUM")
#: Primary-header keywords never merged into an extension's metadata.
STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "NEXTEND", "GROUPS", "PCOUNT",
              "GCOUNT", "XTENSION", "EXTNAME", "EXTVER", "BSCALE", "BZERO", "BLANK",
              "CHECKSUM", "DATASUM", "COMMENT", "HISTORY", ""}


class FITSFileError(ValueError):
    """A file that is not the complete FITS image asked for (no such HDU, truncated, ...)."""


class MissingUnitError(FITSFileError, u.UnitsError):
    """An image without ``BUNIT`` read without a unit."""


def _describe_hdu(hdul, index):
    name = hdul[index].name
    return f"HDU {index}" + (f" ({name})" if name and name != "PRIMARY" else "")


def _is_image(hdu):
    return getattr(hdu, "is_image", False) and hdu.header.get("NAXIS", 0) >= 1 and not \
        isinstance(hdu, (fits.GroupsHDU,))


def resolve_hdu(hdul, hdu, path):
    """Index of the image HDU to process: ``hdu`` or the first HDU with image data."""
    if hdu is None:
        for index, item in enumerate(hdul):
            if _is_image(item):
                return index
        raise FITSFileError(f"{path} has no image HDU.")
    names = ", ".join(
        f"{i}:{h.name}" + (f",{h.ver}" if h.ver != 1 else "") for i, h in enumerate(hdul)
    )
    if isinstance(hdu, int):
        if not 0 <= hdu < len(hdul):
            raise FITSFileError(f"{path} has no HDU {hdu}; its HDUs are {names}.")
        index = hdu
    else:
        try:
            index = hdul.index_of(hdu)
        except (KeyError, IndexError):
            shown = ",".join(str(p) for p in hdu) if isinstance(hdu, tuple) else hdu
            raise FITSFileError(f"{path} has no HDU {shown}; its HDUs are {names}.") from None
    if not _is_image(hdul[index]):
        raise FITSFileError(
            f"{_describe_hdu(hdul, index)} of {path} is not an image with data; "
            f"its HDUs are {names}."
        )
    return index


def check_fits_file(path):
    """
    `FITSFileError` naming ``path`` when it is not a complete FITS file.

    Every header is read (``lazy_load_hdus=False``), which is where astropy
    notices a file shorter than its headers announce; left alone, that only
    surfaces later as "buffer is too small for requested array".
    """
    from astropy.utils.exceptions import AstropyUserWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AstropyUserWarning)
        try:
            with fits.open(path, lazy_load_hdus=False):
                pass
        except (OSError, EOFError, TypeError, ValueError) as err:
            raise FITSFileError(f"{path} cannot be read as FITS (empty, truncated or "
                                f"corrupt file): {error_message(err)}") from None
    for item in caught:
        text = " ".join(str(item.message).split())
        if "truncated" in text or "corrupt" in text:
            what = "is truncated" if "truncated" in text else "is truncated or corrupt"
            raise FITSFileError(f"{path} {what} ({text}): it was not completely written or "
                                "copied; write or copy it again.")
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)


def read_ccd(path, hdu=None, unit=None):
    """
    Read one image HDU as CCDData: ``(ccd, index)``.

    ``hdu`` is the index, name or ``(name, ver)`` of the HDU (default: the
    first HDU with image data); the primary header's keywords are visible
    in the metadata of an extension.  ``unit`` is required when neither
    header has ``BUNIT`` (`MissingUnitError`).
    """
    from astropy.nddata import CCDData

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file.")
    check_fits_file(path)
    with fits.open(path) as hdul:
        index = resolve_hdu(hdul, hdu, path)
        header = hdul[index].header
        primary = hdul[0].header
        if unit is None and "BUNIT" not in header and "BUNIT" not in primary:
            raise MissingUnitError(
                f"{path} ({_describe_hdu(hdul, index)}) has no BUNIT keyword: pass the "
                "image unit with unit=..., e.g. unit='electron/s', or unit='adu' with gain=...."
            )
        if unit is None and "BUNIT" not in header:
            unit = primary["BUNIT"]
        primary = primary.copy() if index != 0 else None
    ccd = CCDData.read(path, hdu=index, unit=unit)
    if primary is not None:
        for card in primary.cards:
            if card.keyword not in STRUCTURAL and card.keyword not in ccd.meta:
                ccd.meta[card.keyword] = (card.value, card.comment)
    return ccd, index


def check_output(path, overwrite):
    """`FileExistsError` or `FileNotFoundError` when ``path`` cannot be written."""
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists: pass overwrite=True to replace it.")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist.")


def default_output(path, suffix):
    """``path`` with ``suffix`` before its FITS extension (``a.fits`` -> ``a_denoised.fits``)."""
    head, tail = os.path.split(os.fspath(path))
    lower = tail.lower()
    for ext in (".fits", ".fit", ".fts"):
        for comp in ("", ".gz", ".bz2", ".fz"):
            if lower.endswith(ext + comp):
                stem = tail[: len(tail) - len(ext + comp)]
                return os.path.join(head, f"{stem}{suffix}{tail[len(stem):]}")
    return os.path.join(head, f"{tail}{suffix}.fits")


def _as_header(meta):
    from ._validation import header_of

    return header_of(meta)


def _apply_meta_changes(header, before, after):
    """Write into ``header`` the keywords and HISTORY that ``after`` adds to ``before``."""
    before = _as_header(before)
    after = _as_header(after)
    for card in after.cards:
        key = card.keyword
        if key in ("HISTORY", "COMMENT", "") or key in STALE_KEYWORDS:
            continue
        if key not in before or before[key] != card.value:
            header[key] = (card.value, _fitting_comment(key, card.value, card.comment))
    n_before = len(before["HISTORY"]) if "HISTORY" in before else 0
    if "HISTORY" in after:
        for line in list(after["HISTORY"])[n_before:]:
            header.add_history(str(line))


def _fitting_comment(key, value, comment):
    """``comment`` shortened so that the card fits in 80 characters (no VerifyWarning)."""
    if not comment:
        return comment
    bare = fits.Card(key, value).image.rstrip()
    if len(bare) > 80:  # a long string continued over several cards
        return comment
    room = 80 - len(bare) - 3  # " / "
    return comment[:room] if room > 0 else ""


def _units_equal(text, unit):
    try:
        return u.Unit(text) == unit
    except (ValueError, TypeError):
        return False


def _find_extension(hdul, name):
    for index, item in enumerate(hdul):
        if item.name == name:
            return index
    return None


def write_like(in_path, index, before, after, out_path, *, overwrite, unit_given):
    """
    Write ``after`` to ``out_path`` with the HDU structure of ``in_path``.

    Every HDU of ``in_path`` is copied unchanged except the image HDU
    ``index`` (data replaced by ``after``'s as float32, or float64 for a
    float64 input; header plus the keywords and ``HISTORY`` that ``after``
    adds to ``before``, without `STALE_KEYWORDS`) and the ``UNCERT`` and
    ``MASK`` extensions (replaced, appended or dropped as ``after`` has
    them); the ``astro-unet`` documentation (`astro_unet.cli`) gives the
    details.  Raises `FileExistsError` when ``out_path`` exists and not
    ``overwrite``.
    """
    with fits.open(in_path) as hdul:
        original = hdul[index]
        dtype = np.float64 if original.header.get("BITPIX") == -64 else np.float32
        header = original.header.copy()
        for key in STALE_KEYWORDS:
            header.remove(key, ignore_missing=True, remove_all=True)
        _apply_meta_changes(header, before.meta, after.meta)
        if after.unit is not None:
            unit = u.Unit(after.unit)
            if unit_given or "BUNIT" not in header or not _units_equal(header["BUNIT"], unit):
                header["BUNIT"] = unit.to_string()
        data = np.asarray(after.data, dtype=dtype)
        if index == 0:
            new = fits.PrimaryHDU(data=data, header=header)
        elif isinstance(original, fits.CompImageHDU):
            new = fits.CompImageHDU(data=data, header=header,
                                    compression_type=original.compression_type)
        else:
            new = fits.ImageHDU(data=data, header=header)

        unc_index = _find_extension(hdul, "UNCERT")
        mask_index = _find_extension(hdul, "MASK")
        out = []
        for i, item in enumerate(hdul):
            if i == index:
                out.append(new)
            elif i == unc_index:
                if after.uncertainty is not None:
                    out.append(_uncertainty_hdu(after, before, item))
            elif i == mask_index:
                if after.mask is not None:
                    out.append(_mask_hdu(after, before, item))
            else:
                out.append(item)
        if unc_index is None and after.uncertainty is not None:
            out.append(_uncertainty_hdu(after, before, None))
        if mask_index is None and after.mask is not None and np.any(after.mask):
            out.append(_mask_hdu(after, before, None))

        out_path = os.fspath(out_path)
        # the temporary file ends like the output, so that .gz/.bz2 outputs are
        # compressed; it gets the user's permissions (umask) when renamed
        with atomic_output(out_path) as tmp:
            fits.HDUList(out).writeto(tmp, overwrite=True, output_verify="fix")
            if os.path.exists(out_path) and not overwrite:
                raise FileExistsError(f"{out_path} exists: pass overwrite=True to replace it.")


def _uncertainty_hdu(after, before, existing):
    unc = after.uncertainty
    old = before.uncertainty
    if (existing is not None and old is not None and type(old) is type(unc)
            and np.array_equal(np.asarray(old.array), np.asarray(unc.array), equal_nan=True)):
        return existing
    header = existing.header.copy() if existing is not None else fits.Header()
    for key in STALE_KEYWORDS:
        header.remove(key, ignore_missing=True, remove_all=True)
    header["UTYPE"] = type(unc).__name__
    return fits.ImageHDU(np.asarray(unc.array, dtype=np.float32), header=header, name="UNCERT")


def _mask_hdu(after, before, existing):
    mask = np.asarray(after.mask, dtype=bool)
    if (existing is not None and before.mask is not None
            and np.array_equal(np.asarray(before.mask, dtype=bool), mask)):
        return existing
    header = existing.header.copy() if existing is not None else fits.Header()
    for key in STALE_KEYWORDS:
        header.remove(key, ignore_missing=True, remove_all=True)
    return fits.ImageHDU(mask.astype(np.uint8), header=header, name="MASK")
