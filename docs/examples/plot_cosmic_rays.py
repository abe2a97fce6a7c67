"""
Remove cosmic rays before denoising
===================================

The network was trained on images without cosmic rays.  A cosmic-ray hit
is a sharp, bright group of pixels that it has never seen: it dims it but
does not remove it, and what is left is a sharp source far above the
background that photometry then counts as real.  Clean single exposures
with `~astro_unet.clean_cosmic_rays` (L.A.Cosmic) *before*
`~astro_unet.denoise_ccd`.

Here a few cosmic rays are added to a simulated short exposure of the
bundled HST image, which is then denoised with and without cleaning.
"""

import matplotlib.pyplot as plt
import numpy as np

from astro_unet import (clean_cosmic_rays, denoise_ccd, load_sample_image, plot_comparison,
                        simulate_short_exposure)

long = load_sample_image()
ratio = 4
short = simulate_short_exposure(long, ratio, seed=1)
t_short = short.meta["EXPTIME"]

# %%
# Add cosmic rays
# ---------------
# Twelve short tracks of 1 to 6 pixels, each pixel receiving 300 to 3000
# electrons (the image is in electron/s, so the deposit is divided by the
# exposure time).

rng = np.random.default_rng(7)
hit = short.copy()
tracks = np.zeros(short.shape, dtype=bool)
for _ in range(12):
    y0, x0 = rng.uniform(12, 244, 2)
    angle, length = rng.uniform(0, np.pi), rng.integers(1, 7)
    for step in range(length):
        y = int(round(y0 + step * np.sin(angle)))
        x = int(round(x0 + step * np.cos(angle)))
        hit.data[y, x] += rng.uniform(300, 3000) / t_short
        tracks[y, x] = True
print("pixels hit:", tracks.sum())

# %%
# Clean them
# ----------
# L.A.Cosmic compares each pixel's sharpness with the noise expected from
# ``sqrt(counts + read_noise**2)`` electrons.  This drizzled image is
# sky-subtracted, so that model would miss the photon noise of the sky: the
# measured background noise (in electrons of the short exposure) is passed
# as an effective read noise instead.  The stars of a drizzled product are
# also sharper than those of a single exposure, so ``objlim`` is raised
# from 5 to 15 to protect their cores.
#
# In real work, clean the single calibrated exposures (``_flt``/``_flc``
# files), with the sky still in them, and never drizzled products: their
# cosmic rays were already rejected when the exposures were combined, and
# only star cores would be flagged.

import astropy.units as u
from astropy.stats import sigma_clipped_stats

from scipy import ndimage

_, _, noise = sigma_clipped_stats(hit.data * t_short)       # electrons
print(f"background noise: {noise:.1f} electrons")
cleaned, crmask = clean_cosmic_rays(hit, read_noise=noise * u.electron, objlim=15,
                                    return_mask=True)
near_hits = ndimage.binary_dilation(tracks, iterations=2)   # a hit and its neighbours
print(f"flagged: {crmask.sum()} pixels; injected pixels found: {(crmask & tracks).sum()} "
      f"of {tracks.sum()}; flagged away from the hits: {(crmask & ~near_hits).sum()}")
print("CRNPIX =", cleaned.meta["CRNPIX"])

# %%
# Denoise both
# ------------
# With the bundled trained model, ``model="default"``.  The difference of
# the two results around the hits is what the network kept of the cosmic
# rays.

with_crs = denoise_ccd(hit, ratio=ratio, model="default", device="cpu")
after_cleaning = denoise_ccd(cleaned, ratio=ratio, model="default", device="cpu")
kept = (with_crs.data - after_cleaning.data)[near_hits].sum()
print(f"cosmic-ray flux left after denoising: {kept / (hit.data - short.data).sum():.0%}")

# %%
# What the network does with a cosmic ray
# ---------------------------------------
# Zoom on the region around the brightest hit (red circle).  From left to
# right: the short exposure with the hit, the same after cleaning, and
# their denoised versions.  Without cleaning the hit survives denoising,
# dimmer but with its shape and still far brighter than the background;
# after cleaning it is gone.

labels, n_tracks = ndimage.label(tracks, structure=np.ones((3, 3)))
centres = ndimage.center_of_mass(tracks, labels, range(1, n_tracks + 1))
brightest = np.argmax(ndimage.maximum(hit.data - short.data, labels, range(1, n_tracks + 1)))
yc, xc = (int(round(v)) for v in centres[brightest])
y0, x0 = min(max(yc - 20, 0), 216), min(max(xc - 20, 0), 216)
cut = (slice(y0, y0 + 40), slice(x0, x0 + 40))
fig = plot_comparison(hit[cut], cleaned[cut], with_crs[cut], after_cleaning[cut],
                      titles=["input with cosmic rays", "cleaned input",
                              "denoised, not cleaned", "denoised after cleaning"],
                      figsize=(13, 3.8), wcs=False)
for ax in fig.axes[:4]:
    ax.scatter([xc - x0], [yc - y0], s=900, facecolors="none", edgecolors="tab:red",
               linewidths=1.0)
plt.show()

# %%
# Where L.A.Cosmic acted
# ----------------------
# Over the whole image: red circles mark the injected cosmic rays (all were
# found, together with a few neighbouring pixels), orange crosses the
# pixels flagged elsewhere.  These lie on stars, mostly in the cores of the
# brightest ones, whose flux the cleaning lowers: the reason not to run
# L.A.Cosmic on drizzled products.

fig = plot_comparison(hit, titles=["flagged pixels"], figsize=(5.5, 5), colorbar=False)
ax = fig.axes[0]
cy, cx = np.transpose(centres)
ax.scatter(cx, cy, s=150, facecolors="none", edgecolors="tab:red", linewidths=1.0,
           transform=ax.get_transform("pixel"), label="injected cosmic ray")
oy, ox = np.nonzero(crmask & ~near_hits)
ax.scatter(ox, oy, s=30, marker="x", color="tab:orange", linewidths=0.8,
           transform=ax.get_transform("pixel"), label="flagged elsewhere")
ax.legend(loc="lower left", fontsize="small")
plt.show()
