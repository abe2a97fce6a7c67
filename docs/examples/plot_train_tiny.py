"""
Train a tiny model on the CPU
=============================

The whole training pipeline in under a minute: the ``smoke`` configuration
shipped with the package trains a 4-channel, 3-level U-net on 64-pixel
crops of synthetic sky scenes rendered with GalSim, degraded with the
package's noise model (`~astro_unet.simulate_short_exposure`), and exports
a model file that `~astro_unet.denoise_ccd` reads.

Such a short run only shows that everything is wired together; a useful
model needs the ``default`` configuration (real HST images and synthetic
scenes, many more steps, a GPU).  The same run from a shell::

    python -m astro_unet.training --config smoke --steps 300 --run-dir smoke_run
    # or
    astro-unet train --config smoke --steps 300 --run-dir smoke_run
"""

import tempfile

from astro_unet.training import load_config, train

# %%
# The configuration
# -----------------
# A configuration is a TOML file with one table per concern (``[run]``,
# ``[model]``, ``[normalization]``, ``[data]``, ``[optim]``, ...); shipped
# ones are loaded by name and any value can be overridden with a dotted key.

run_dir = tempfile.mkdtemp()
config = load_config("smoke", overrides={
    "run.run_dir": run_dir,
    "optim.steps": 300,          # the shipped smoke run makes only 6 steps
    "optim.warmup_steps": 20,
    "validation.every": 0,       # validate once, at the end
})
print(config.model)
print("steps:", config.optim.steps, "| batch:", config.optim.batch_size,
      "| crops:", config.data.crop_size, "px | device:", config.run.device)

# %%
# Train
# -----
# `~astro_unet.training.train` writes ``log.csv``, checkpoints and the model
# file into the run directory and returns the model's path.

model_path = train(config, progress=False)
print(model_path)

# %%
# The training loss
# -----------------
# ``log.csv`` has one row per step (learning rate, L1 loss, gradient norm,
# throughput, ...).

import matplotlib.pyplot as plt
import numpy as np
from astropy.table import Table

log = Table.read(f"{run_dir}/log.csv", format="ascii.csv")
log = log[~np.ma.getmaskarray(log["l1"])]      # the last row holds the validation
fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
ax.plot(log["step"], log["l1"], lw=0.6, color="0.6", label="L1 loss per step")
window = 20
smooth = np.convolve(np.asarray(log["l1"], float), np.ones(window) / window, mode="valid")
ax.plot(np.asarray(log["step"])[window - 1:], smooth, lw=2, label=f"mean of {window} steps")
ax.set_xlabel("step")
ax.set_ylabel("L1 loss (transformed pixels)")
ax.legend()
plt.show()

# %%
# Use the model
# -------------
# The exported file is an ordinary model file: pass its path as ``model=``
# (or ``--model`` on the command line).  The header records the model's
# name and the SHA-256 of its file.

from astropy.stats import sigma_clipped_stats

from astro_unet import (denoise_ccd, load_sample_image, plot_comparison,
                        simulate_short_exposure)

long = load_sample_image()
short = simulate_short_exposure(long, 4, seed=1)
denoised = denoise_ccd(short, ratio=4, model=model_path, device="cpu")
print(denoised.meta["DNMODEL"], denoised.meta["DNSHA256"][:12])

# %%
# A few hundred steps on four small synthetic scenes are far too few: the
# network (which adds a learned correction to its input) has hardly moved
# from the identity.  The background noise (sigma-clipped standard
# deviation) of its output is still that of the input, not that of the long
# exposure; a useful model needs the ``default`` configuration.

for name, image in (("input (200 s)", short), ("tiny model", denoised),
                    ("long exposure (802 s)", long)):
    print(f"{name:22s} background noise {sigma_clipped_stats(image.data)[2]:.4f} electron/s")

cut = (slice(40, 168), slice(100, 228))
fig = plot_comparison(short[cut], denoised[cut], long[cut],
                      titles=["input (200 s)", "tiny model, 300 steps", "802 s"])
plt.show()
