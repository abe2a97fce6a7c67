# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The small public-domain HST image shipped with the package."""

from importlib import resources

from astropy.nddata import CCDData

__all__ = ["load_sample_image", "sample_image_path"]

_SAMPLE = "hst_wfc3_f555w_sample.fits"


def sample_image_path():
    """
    Path of the bundled HST sample image (a FITS file).

    Returns
    -------
    path : str
        File name of a 256x256 HST WFC3/UVIS F555W drizzled cutout in
        electron/s (Hubble Legacy Archive, ``hst_11360_e1``; public domain).

    Examples
    --------
    >>> from astropy.io import fits
    >>> from astro_unet import sample_image_path
    >>> fits.getheader(sample_image_path())["FILTER"]
    'F555W'
    """
    return str(resources.files("astro_unet") / "data" / _SAMPLE)


def load_sample_image():
    """
    Load the bundled HST WFC3/UVIS F555W sample as `~astropy.nddata.CCDData`.

    The cutout comes from one of the Astro U-net paper's validation fields
    (HLA ``hst_11360_e1``, star field with nebular emission), 256x256 pixels
    of 0.04 arcsec, in electron/s with its celestial WCS.  The HLA crop has no
    ``EXPTIME``; the header's value (802 s) is an estimate from the
    background noise of the full field, corrected for the noise correlation
    that drizzling introduces (`astro_unet.training.estimate_gain_from_noise`;
    the value and method are recorded in ``astro_unet/training/exposures.ecsv``),
    and is marked as such in its comment.

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        A new object each call; modifying it does not change the file.

    Examples
    --------
    >>> from astro_unet import load_sample_image
    >>> ccd = load_sample_image()
    >>> ccd.shape, ccd.unit, ccd.wcs.has_celestial
    ((256, 256), Unit("electron / s"), True)
    >>> ccd.meta["EXPTIME"]
    802.0
    """
    return CCDData.read(sample_image_path())
