"""
Denoise many files at once, and mosaics too large for memory
============================================================

A night of short exposures is a folder of FITS files.
`~astro_unet.denoise_files` denoises all of them on a Dask cluster (a
`~distributed.LocalCluster` on this computer unless a ``client`` is given),
one task per file, loading the model once per worker process.  A file that
fails is reported in the result table and does not stop the others, and a
rerun skips the outputs that already exist.  The same from a shell::

    astro-unet denoise raw/*.fits --ratio 4 --output-dir denoised

Here the files are four simulated 200 s exposures of the bundled HST image,
with independent noise.
"""

import os
import tempfile

from astro_unet import load_sample_image, simulate_short_exposure

long = load_sample_image()
ratio = 4
workdir = tempfile.mkdtemp()
raw_dir = os.path.join(workdir, "raw")
os.makedirs(raw_dir)
for seed in range(4):
    short = simulate_short_exposure(long, ratio, seed=seed)
    short.write(os.path.join(raw_dir, f"exposure_{seed}.fits"))
print(sorted(os.listdir(raw_dir)))

# %%
# Denoise the folder
# ------------------
# ``inputs`` may be a folder, a glob (``"raw/*.fits"``), a list of paths or
# a `ccdproc.ImageFileCollection`.  Each output keeps the name of its input
# with ``_denoised`` added.  The other keywords go to
# `~astro_unet.denoise_ccd`; ``model="default"`` (the bundled model) is the
# default.
#
# Without a ``client``, ``denoise_files(..., workers=N)`` starts a
# `~distributed.LocalCluster` of ``N`` worker processes (default: one per
# four cores) and closes it at the end.  Dask starts those processes by
# re-importing the main script, so a script of your own that does this
# needs the usual guard (without it, `~astro_unet.denoise_files` stops at
# once with a `RuntimeError` that says so)::
#
#     if __name__ == "__main__":
#         denoise_files("raw/*.fits", "denoised", ratio=4, workers=2)
#
# To run anywhere as it is (a script, a notebook, this page), this example
# passes a cluster of one worker thread inside this process; pass the
# client of a running cluster (or its address) the same way.

from distributed import LocalCluster

from astro_unet import denoise_files

out_dir = os.path.join(workdir, "denoised")
with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                  dashboard_address=None) as cluster, cluster.get_client() as client:
    table = denoise_files(os.path.join(raw_dir, "*.fits"), out_dir, ratio=ratio,
                          client=client, device="cpu")

# %%
# One row per file, in input order; ``table.meta`` has the counts.  The
# first file takes longest: the worker loads the model for it and keeps it
# for the others.

for name in ("input", "output"):
    table[name] = [os.path.basename(path) for path in table[name]]
table["seconds"].format = ".2f"
table[["input", "output", "status", "seconds"]].pprint()
print({key: table.meta[key] for key in ("n_ok", "n_skipped", "n_error")})

# %%
# One input and its output, read back from disk (the output file has the
# input's header and WCS, ``EXPTIME`` multiplied by ``ratio``, and an
# ``UNCERT`` extension).

import matplotlib.pyplot as plt
from astropy.nddata import CCDData

from astro_unet import plot_comparison

before = CCDData.read(os.path.join(raw_dir, "exposure_0.fits"))
after = CCDData.read(os.path.join(out_dir, "exposure_0_denoised.fits"))
print("EXPTIME:", before.meta["EXPTIME"], "->", after.meta["EXPTIME"])
fig = plot_comparison(before, after, titles=["exposure_0.fits (200 s)",
                                             "exposure_0_denoised.fits"])
plt.show()

# %%
# Mosaics larger than memory
# --------------------------
# `~astro_unet.denoise_large` denoises a single image that does not fit in
# memory: a FITS file, read block by block, or a `dask.array.Array`.  Each
# block is denoised with the tiles of the whole image's tile plan, so the
# result equals `~astro_unet.denoise_ccd` on the whole image, and it is
# written to the output file block by block.  Its blocks are normally about
# 4096 pixels on a side (``chunk_size``); the tiny blocks used here on a
# 256 x 256 file only show the call.

import numpy as np

from astro_unet import denoise_large

large_out = denoise_large(os.path.join(raw_dir, "exposure_0.fits"),
                          os.path.join(workdir, "exposure_0_large.fits"),
                          ratio=ratio, chunk_size=128, device="cpu")
blockwise = CCDData.read(large_out)
print("same pixels as denoise_files:",
      np.allclose(blockwise.data, after.data, rtol=1e-5, atol=1e-6))
