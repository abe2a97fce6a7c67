# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Record processing steps in image metadata, the way ccdproc does.

ccdproc's ``log_to_metadata`` writes one keyword per processing call.  Here
each step writes a few FITS-safe keywords (at most 8 characters, so they never
need HIERARCH) plus, for `~astropy.io.fits.Header` metadata, one ``HISTORY``
line with the call that was made.  Dict metadata gets plain values (no
comments, no ``HISTORY``), so that ``float(meta["EXPTIME"])`` works whatever
the type of the metadata.
"""

from astropy.io import fits

__all__ = []  # private module


def _version():
    try:
        from astro_unet import __version__
    except ImportError:  # pragma: no cover - during a broken install
        return "unknown"
    return __version__


def set_keyword(meta, key, value, comment=""):
    """Set a FITS-safe keyword ``key`` (<= 8 characters) in ``meta`` in place."""
    key = key.upper()
    if len(key) > 8 or not key.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"{key!r} is not a FITS-safe keyword of at most 8 characters.")
    if isinstance(value, str) and len(value) > 68:
        value = value[:65] + "..."
    if isinstance(meta, fits.Header):
        meta[key] = (value, comment[:46] if comment else "")
    else:
        # a plain value: users read dict metadata as meta["EXPTIME"], like a Header
        meta[key] = value


def log_step(meta, call, keywords=None):
    """
    Record one processing step in ``meta`` (modified in place).

    Parameters
    ----------
    meta : `~astropy.io.fits.Header` or dict-like
        The metadata of the *new* object (never the caller's input).
    call : str
        Short description of the call, e.g. ``"denoise_ccd(ratio=2.0)"``.
    keywords : dict, optional
        ``{KEY: (value, comment)}`` FITS-safe keywords to set.
    """
    for key, item in (keywords or {}).items():
        value, comment = item if isinstance(item, tuple) else (item, "")
        set_keyword(meta, key, value, comment)
    if isinstance(meta, fits.Header):
        meta.add_history(f"astro_unet {_version()}: {call}")
    return meta
