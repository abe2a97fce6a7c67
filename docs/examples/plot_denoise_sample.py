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
# ``model="default"`` is the trained model bundled with the package;
# ``ratio`` tells it how much longer the result should look.  The result is
# a new `~astropy.nddata.CCDData` in the input's unit, with the WCS and the
# header of the input, ``EXPTIME`` multiplied by ``ratio`` and ``DN*``
# keywords that record what was done.
#
# By default (``estimate="extended"``) the output is the expected exposure
# ``ratio`` times longer that begins with this one: the input's own photons
# with their share ``1 / ratio`` of the time, and the network's estimate for
# the rest, ``(x + (ratio - 1) d) / ratio``.  ``estimate="long"`` keeps the
# input's noise at the level of a real long exposure, and
# ``estimate="mean"`` returns the network's expected value alone, with a
# background far quieter than any real exposure (see :ref:`estimates`).

from astro_unet import denoise_ccd

denoised = denoise_ccd(short, ratio=ratio, model="default", device="cpu")
mean = denoise_ccd(short, ratio=ratio, model="default", device="cpu", estimate="mean")
print(denoised.meta["EXPTIME"], denoised.meta["DNRATIO"], denoised.meta["DNMODEL"],
      denoised.meta["DNESTIM"], denoised.meta["DNTILE"])

# %%
# Input, outputs and the long exposure
# ------------------------------------
# All panels use the ZScale limits of the noisy input and a linear stretch.

import matplotlib.pyplot as plt

from astro_unet import plot_comparison, plot_residuals

fig = plot_comparison(
    short, denoised, mean, long,
    titles=[f"input ({802 / ratio:.0f} s)", 'estimate="extended" (default)', 'estimate="mean"',
            "long exposure (802 s)"],
    stretch="linear", interval="zscale")
plt.show()

# %%
# Residual
# --------
# The mean estimate minus the long exposure, with colour limits symmetric
# about zero: what the network got wrong.  Noise that remains is spread over
# the whole field; a systematic error shows up as a pattern on the sources.
# Here the residual is far weaker than the input's noise (next figure); what
# is left sits on the sources, mostly the cores and diffraction spikes of
# the brightest stars.

fig = plot_residuals(long, mean, title='estimate="mean" - long exposure')
plt.show()

# %%
# The same for the noisy input, on the same colour scale, for comparison.

limit = fig.axes[0].images[0].norm.vmax
fig = plot_residuals(long, short, limit=limit, title="input - long exposure")
plt.show()
