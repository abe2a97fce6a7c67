# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Classical denoisers for ``benchmarks/quality.py``.

Every function takes a 2-D float image (any unit), a boolean mask of bad
pixels (True = bad) and returns a new float64 array of the same shape and
unit.  Bad pixels are first replaced by the value of the nearest good pixel
(as `astro_unet.denoise_ccd` does), so that they neither spread zeros nor
NaN into their neighbours; the caller keeps them masked afterwards.

None of the parameters is tuned on the evaluation images:

``gaussian``
    `scipy.ndimage.gaussian_filter`, fixed sigma (1 pixel by default: about
    the PSF core of WFC3/UVIS, 0.07-0.08 arcsec FWHM = 1.8-2 px), reflected
    edges.
``median``
    `scipy.ndimage.median_filter`, fixed 3x3 box, reflected edges.
``wavelet``
    `skimage.restoration.denoise_wavelet` with BayesShrink, soft
    thresholding, ``db1`` wavelet and the noise sigma estimated from the
    image itself (scikit-image's default: MAD of the finest diagonal detail
    coefficients); run on the image as it is (linear space).  On HST images
    this is close to doing nothing: BayesShrink's threshold per sub-band is
    sigma^2 / sigma_signal, and the bright stars make sigma_signal large, so
    the thresholds are tiny.  ``quality.py`` therefore also runs
    ``wavelet_vst``: the same in the generalised-Anscombe space described
    under ``bm3d`` (where bright sources are compressed and the noise is
    homoscedastic), with the unbiased inverse.
``bm3d``
    The `bm3d` package (both stages, the default 'np' profile).  By default
    in a variance-stabilised space: the image is converted to electrons of
    the short exposure and passed through the generalised Anscombe transform
    for Poisson + Gaussian noise, :math:`f(z) = 2\\sqrt{z + 3/8 + \\sigma^2}`
    (gain 1, Gaussian variance :math:`\\sigma^2` = read noise^2 + dark
    current x exposure time), where the noise is close to 1 for every flux;
    ``sigma_psd`` is then estimated robustly from the transformed image
    (`skimage.restoration.estimate_sigma`: the input also carries the long
    exposure's own, correlated, noise, so the nominal 1 is not assumed), and
    the result is mapped back with the closed-form approximation of the exact
    unbiased inverse (Makitalo & Foi 2011, 2013), which is the right inverse
    for an estimator of the mean in the transformed space.  ``space="linear"``
    runs BM3D on the image directly with ``sigma_psd`` estimated the same way
    (one noise level for the whole image: bright sources are over-smoothed
    relative to their own noise).
"""

import numpy as np
from scipy import ndimage

__all__ = ["fill_bad", "gaussian", "median", "wavelet", "bm3d_denoise",
           "anscombe", "inverse_anscombe", "robust_sigma"]


def fill_bad(data, mask=None):
    """Copy of ``data`` (float64) with bad/non-finite pixels set to the nearest good one."""
    data = np.array(data, dtype=np.float64, copy=True)
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    if bad.all():
        raise ValueError("no good pixel to fill from.")
    if bad.any():
        idx = ndimage.distance_transform_edt(bad, return_distances=False,
                                             return_indices=True)
        data = data[tuple(idx)]
    return data


def robust_sigma(image):
    """Gaussian noise sigma of ``image`` (`skimage.restoration.estimate_sigma`)."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(np.asarray(image, dtype=np.float64)))


def gaussian(data, mask=None, *, sigma=1.0):
    """Gaussian filter of fixed ``sigma`` pixels."""
    return ndimage.gaussian_filter(fill_bad(data, mask), sigma=float(sigma), mode="reflect")


def median(data, mask=None, *, size=3):
    """Median filter in a ``size`` x ``size`` box."""
    return ndimage.median_filter(fill_bad(data, mask), size=int(size), mode="reflect")


def wavelet(data, mask=None, *, electrons_per_unit=None, gauss_var=0.0, space="linear"):
    """
    BayesShrink wavelet denoising, sigma estimated from the image.

    ``space="linear"``: on the image as it is.  ``space="anscombe"``: in the
    generalised-Anscombe space, as for `bm3d_denoise` (same parameters).
    """
    from skimage.restoration import denoise_wavelet

    def run(image):
        return np.asarray(denoise_wavelet(image, method="BayesShrink", mode="soft",
                                          rescale_sigma=True), dtype=np.float64)

    image = fill_bad(data, mask)
    if space == "linear":
        return run(image)
    if space != "anscombe":
        raise ValueError(f"space must be 'anscombe' or 'linear', got {space!r}.")
    if not electrons_per_unit or electrons_per_unit <= 0:
        raise ValueError("space='anscombe' needs electrons_per_unit > 0.")
    k = float(electrons_per_unit)
    d = run(anscombe(image * k, float(gauss_var)))
    return inverse_anscombe(d, float(gauss_var)) / k


def anscombe(electrons, gauss_var):
    """Generalised Anscombe transform (gain 1, zero-mean Gaussian of variance ``gauss_var``)."""
    return 2.0 * np.sqrt(np.clip(electrons + 0.375 + gauss_var, 0.0, None))


def inverse_anscombe(d, gauss_var):
    """
    Closed-form approximation of the exact unbiased inverse (Makitalo & Foi).

    For the generalised Anscombe transform with unit gain and zero Gaussian
    mean: the closed-form approximation of the exact unbiased inverse of the
    Poisson Anscombe transform (Makitalo & Foi 2011), minus
    :math:`\\sigma^2` (their 2013 generalised form); transformed values are clipped
    below at :math:`2\\sqrt{3/8}`, the transform of zero counts without
    Gaussian noise (the expansion is not monotonic far below that).
    """
    d = np.maximum(np.asarray(d, dtype=np.float64), 2.0 * np.sqrt(0.375))
    s = np.sqrt(1.5)
    x = 0.25 * d ** 2 + 0.25 * s / d - 1.375 / d ** 2 + 0.625 * s / d ** 3 - 0.125
    return x - gauss_var


def bm3d_denoise(data, mask=None, *, electrons_per_unit=None, gauss_var=0.0,
                 space="anscombe"):
    """
    BM3D (both stages) in the Anscombe space or directly.

    Parameters
    ----------
    data : array-like
        Image in any unit.
    mask : array-like of bool, optional
        Bad pixels.
    electrons_per_unit : float
        Electrons of the (short) exposure per data unit (the exposure time
        for electron/s).  Needed for ``space="anscombe"``.
    gauss_var : float
        Variance (electrons^2) of the Gaussian noise: read noise^2 + dark
        current x exposure time.
    space : {"anscombe", "linear"}

    Returns
    -------
    out : `numpy.ndarray`
        Same unit as ``data``.
    """
    import bm3d

    image = fill_bad(data, mask)
    if space == "linear":
        sigma = robust_sigma(image)
        return np.asarray(bm3d.bm3d(image, sigma_psd=sigma), dtype=np.float64)
    if space != "anscombe":
        raise ValueError(f"space must be 'anscombe' or 'linear', got {space!r}.")
    if not electrons_per_unit or electrons_per_unit <= 0:
        raise ValueError("space='anscombe' needs electrons_per_unit > 0.")
    k = float(electrons_per_unit)
    z = anscombe(image * k, float(gauss_var))
    sigma = robust_sigma(z)
    d = np.asarray(bm3d.bm3d(z, sigma_psd=sigma), dtype=np.float64)
    return inverse_anscombe(d, float(gauss_var)) / k
