"""
Denoise a FITS file: command line and Python
============================================

A real frame on disk is denoised twice, once with the ``astro-unet``
command and once with the Python API, and the results are compared.  The
frame is the bundled HST WFC3/UVIS image itself (802 s, electron/s); with
``--ratio 2`` the network makes it look like a 1604 s exposure.  Replace
the path with your own file.
"""

import os
import tempfile

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData

from astro_unet import denoise_ccd, sample_image_path
from astro_unet.cli import main

path = sample_image_path()
workdir = tempfile.mkdtemp()
print(fits.getheader(path)["INSTRUME"], fits.getheader(path)["BUNIT"],
      fits.getheader(path)["EXPTIME"])

# %%
# From the command line
# ---------------------
# In a shell this is::
#
#     astro-unet denoise hst_wfc3_f555w_sample.fits --ratio 2 -o denoised_cli.fits
#
# Here the same command runs in this Python process through
# `astro_unet.cli.main`, which takes the command's arguments as a list and
# returns its exit status.  The model is the bundled trained one unless
# ``--model`` names another (a registered name or a model file).  The unit
# comes from ``BUNIT``, the exposure time from ``EXPTIME``; ``--unit``,
# ``--exptime`` and ``--gain`` override them, and ``--hdu SCI,1`` picks an
# extension of a multi-extension file.

out_cli = os.path.join(workdir, "denoised_cli.fits")
status = main(["denoise", path, "--ratio", "2", "--device", "cpu", "-o", out_cli])
print("exit status:", status)

# %%
# The output file keeps the input's structure and header; the step is
# recorded in ``DN*`` keywords and a ``HISTORY`` line, ``EXPTIME`` is the
# new effective exposure time, and the uncertainty is stored in an
# ``UNCERT`` extension (the `~astropy.nddata.CCDData` convention).

with fits.open(out_cli) as hdul:
    hdul.info()
    header = hdul[0].header
    for key in ("EXPTIME", "DNRATIO", "DNMODEL", "DNTILE", "DNOVERLP", "DNUNCERT"):
        print(f"{key:8s} = {header[key]!r:24s} / {header.comments[key]}")
    print("".join(header["HISTORY"]))  # one line, split over 72-character cards

# %%
# From Python
# -----------
# The same with the API: read, denoise (``model="default"``, the bundled
# model, as on the command line), write.

ccd = CCDData.read(path)
result = denoise_ccd(ccd, ratio=2, model="default", device="cpu")
out_api = os.path.join(workdir, "denoised_api.fits")
result.write(out_api)

from_cli = CCDData.read(out_cli)
print("unit:", from_cli.unit, "| WCS kept:", from_cli.wcs.wcs.compare(ccd.wcs.wcs))
# the file holds float32 pixels, like the input file
print("same pixels as the API (to float32 precision):",
      np.allclose(from_cli.data, result.data, rtol=1e-6, atol=1e-6))

# %%
# The frame before and after, zoomed on the brightest stars, with the same
# ZScale limits.

import matplotlib.pyplot as plt

from astro_unet import plot_comparison

cut = (slice(60, 160), slice(120, 220))
fig = plot_comparison(ccd[cut], from_cli[cut], titles=["802 s frame", "denoised, r = 2"])
plt.show()
