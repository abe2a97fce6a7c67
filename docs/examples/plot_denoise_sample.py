"""
Simulate a short exposure, denoise it and compare
=================================================

The basic experiment of Vojtekova et al. (2021): take a real long exposure,
make a realistic exposure ``r`` times shorter from it
(`~astro_unet.simulate_short_exposure`, the paper's eq. 4), let the network
turn it back into an ``r`` times longer one (`~astro_unet.denoise_ccd`), and
compare both with the original.  The panels share the ZScale colour limits
of the first image and a linear stretch, as in the paper's figures.
"""

# %%
# The long exposure
# -----------------
# The bundled sample is a 256 x 256 cutout of a drizzled HST WFC3/UVIS
# F555W image (electron/s, 802 s) with its celestial WCS.

from astro_unet import load_sample_image

long = load_sample_image()
print(long.shape, long.unit, long.meta["EXPTIME"], "s")

# %%
# A four times shorter exposure
# -----------------------------
# Poisson noise of the shorter exposure, dark current and read noise of
# WFC3/UVIS (the preset is recognised from the ``INSTRUME`` and ``DETECTOR``
# keywords).  A rate image stays a rate image: only the noise changes, and
# ``EXPTIME`` becomes 802 / 4 s.

from astro_unet import simulate_short_exposure

ratio = 4
short = simulate_short_exposure(long, ratio, seed=1)
print(short.meta["EXPTIME"], short.meta["SIMDET"])

# %%
# Denoise
# -------
# ``model="default"`` is the trained model bundled with the package
# (``astro-unet-default-v1``); ``ratio`` tells it how much longer the result
# should look.  The result is a new `~astropy.nddata.CCDData` in the input's
# unit, with the WCS and the header of the input, ``EXPTIME`` multiplied by
# ``ratio`` and ``DN*`` keywords that record what was done.

from astro_unet import denoise_ccd

denoised = denoise_ccd(short, ratio=ratio, model="default", device="cpu")
print(denoised.meta["EXPTIME"], denoised.meta["DNRATIO"], denoised.meta["DNMODEL"],
      denoised.meta["DNTILE"])

# %%
# Input, output and the long exposure
# -----------------------------------
# All three panels use the ZScale limits of the noisy input and a linear
# stretch.

import matplotlib.pyplot as plt

from astro_unet import plot_comparison, plot_residuals

fig = plot_comparison(
    short, denoised, long,
    titles=[f"input ({802 / ratio:.0f} s)", "denoised", "long exposure (802 s)"],
    stretch="linear", interval="zscale")
plt.show()

# %%
# Residual
# --------
# Denoised minus long exposure, with colour limits symmetric about zero:
# what the network got wrong.  Noise that remains is spread over the whole
# field; a systematic error shows up as a pattern on the sources.  Here the
# residual is far weaker than the input's noise (next figure), and what
# is left sits on the sources: the peaks of the faint stars come out a few
# per cent low (blue dots), and the cores and diffraction spikes of the
# brightest stars are not reproduced exactly.

fig = plot_residuals(long, denoised, title="denoised - long exposure")
plt.show()

# %%
# The same for the noisy input, on the same colour scale, for comparison.

limit = fig.axes[0].images[0].norm.vmax
fig = plot_residuals(long, short, limit=limit, title="input - long exposure")
plt.show()
