"""
A real pair: denoise on the short grid, compare on the long grid
=================================================================

A real short exposure does not share the pixel grid of the long exposure it
is compared with: the telescope pointed a little differently, the detector
may be rotated.  This example makes such a pair from the bundled HST image,
denoises the short frame on its own grid (where its noise is white, as the
network expects), puts the result on the long exposure's grid with
`~astro_unet.align_pair`, which also reports how well the two agree, and
runs `~astro_unet.photometric_comparison` on the aligned images.
"""

# %%
# A short exposure on its own detector grid
# -----------------------------------------
# The long exposure is the bundled 256 x 256 HST WFC3/UVIS F555W cutout
# (electron/s, 802 s, with a celestial WCS).  The short one is a four times
# shorter exposure of it (`~astro_unet.simulate_short_exposure`), which
# then gets its own grid without resampling its noise: a crop with an
# integer offset (`~astropy.nddata.CCDData` slicing updates the WCS) and a
# quarter turn with `numpy.rot90`, for which the WCS is updated by hand.

import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty

from astro_unet import load_sample_image, simulate_short_exposure

long = load_sample_image()
ratio = 4
simulated = simulate_short_exposure(long, ratio, seed=1)


def rotate_quarter(ccd):
    """``numpy.rot90`` of a CCDData (a quarter turn), with its WCS updated exactly."""
    ny, nx = ccd.shape
    # 1-based pixels: old = turn @ new + (nx + 1, 0), since new[i, j] = old[j, nx - 1 - i]
    turn = np.array([[0.0, -1.0], [1.0, 0.0]])
    wcs = ccd.wcs.deepcopy()
    wcs.wcs.pc = wcs.wcs.get_pc() @ turn
    wcs.wcs.crpix = np.linalg.solve(turn, wcs.wcs.crpix - np.array([nx + 1.0, 0.0]))
    wcs.wcs.set()
    return CCDData(
        np.rot90(ccd.data).copy(), unit=ccd.unit, wcs=wcs, meta=ccd.meta.copy(),
        uncertainty=StdDevUncertainty(np.rot90(ccd.uncertainty.array).copy()),
        mask=None if ccd.mask is None else np.rot90(ccd.mask).copy())


cropped = simulated[17:241, 9:241]          # 224 x 232 pixels, offset (9, 17)
short = rotate_quarter(cropped)
print("short:", short.shape, short.unit, short.meta["EXPTIME"], "s")

# %%
# Check the WCS of the turned image: a few pixels must show the same sky
# position and the same value as the pixel they came from.

ny, nx = cropped.shape
x_new = np.array([0, 5, 100, ny - 1])
y_new = np.array([0, 200, 57, nx - 1])
x_old, y_old = nx - 1 - y_new, x_new          # where each new pixel comes from
separation = short.wcs.pixel_to_world(x_new, y_new).separation(
    cropped.wcs.pixel_to_world(x_old, y_old))
print(f"largest sky separation: {separation.arcsec.max():.1e} arcsec")
print("same values:", np.array_equal(short.data[y_new, x_new], cropped.data[y_old, x_old]))

# %%
# Denoise on the short grid
# -------------------------
# `~astro_unet.denoise_ccd` with the bundled default model and the default
# estimate, on the frame as the detector recorded it: its noise is white,
# as in training.  Resampling first would correlate the noise of
# neighbouring pixels, which the network has never seen.

from astro_unet import denoise_ccd

denoised = denoise_ccd(short, ratio=ratio, model="default", device="cpu")
print("denoised:", denoised.shape, denoised.meta["EXPTIME"], "s", denoised.meta["DNESTIM"])

# %%
# Align with the long exposure
# ----------------------------
# ``grid="long"`` resamples the denoised image onto the long exposure's
# grid and leaves the long exposure, the reference of the comparison, as it
# is.  (``grid="short"``, the default, would resample the long exposure
# onto the short grid instead: the choice for making training pairs or for
# denoising afterwards, since the short frame then keeps its pixels.  Here
# denoising is already done.)  The noisy short exposure is aligned the same
# way, for comparison.
#
# The report says how well the images agree after alignment: the median
# offset of the matched stars (long minus short, in pixels) and the median
# long / short flux ratio of the bright ones, per second.  With correct
# WCSs both are close to 0 and 1.

from astro_unet import align_pair

aligned = align_pair(denoised, long, grid="long")
print(aligned)
noisy = align_pair(short, long, grid="long")
print(repr(noisy))

# %%
# This pair differs by whole pixels and a quarter turn, so the interpolation
# lands on pixel centres and reproduces the short frame's values: no noise
# is resampled here.  The parts of the long grid outside the short frame
# are masked, in both images of each pair.

covered = ~noisy.short.mask
print(f"masked: {np.mean(~covered):.0%} of the long grid")
print("resampled noisy pixels = simulated ones:",
      np.allclose(noisy.short.data[covered], simulated.data[covered], rtol=1e-6, atol=1e-6))

# %%
# Photometry on the common grid
# -----------------------------
# `~astro_unet.photometric_comparison` with the long exposure as the
# reference, for the denoised and for the noisy short exposure (masked
# pixels are left out of detection and photometry).

from astro_unet import photometric_comparison

for name, pair in (("noisy input", noisy), ("denoised", aligned)):
    table, summary = photometric_comparison(pair.long, pair.short)
    print(f"{name:12s}: {summary['n_matched']} of {summary['n_reference']} sources, "
          f"TPR {summary['tpr']:.2f}, precision {summary['precision']:.2f}, "
          f"mean |relative flux error| {summary['rfe_mean']:.1f} %")

# %%
# The images on the long grid
# ---------------------------
# The same colour limits (ZScale of the noisy input) for all three panels;
# the masked border outside the short frame is blank.

import matplotlib.pyplot as plt

from astro_unet import plot_comparison

fig = plot_comparison(noisy.short, aligned.short, aligned.long,
                      titles=[f"input ({802 / ratio:.0f} s), aligned", "denoised, aligned",
                              "long exposure (802 s)"])
plt.show()
