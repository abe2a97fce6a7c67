"""4096x4096 denoise_ccd with the shipped default model on the CPU (1 torch thread).

Run: python benchmarks/speed_default_model.py
"""
import resource
import time

import numpy as np
import torch
from astropy.nddata import CCDData

from astro_unet import denoise_ccd

torch.set_num_threads(1)
rng = np.random.default_rng(0)
img = CCDData(rng.poisson(50.0, (4096, 4096)).astype(np.float32), unit="electron",
              meta={"EXPTIME": 100.0})
# first call: loads the model and measures its overlap (not timed)
denoise_ccd(CCDData(img.data[:256, :256], unit="electron"), ratio=2, device="cpu")
t = time.perf_counter()
out = denoise_ccd(img, ratio=2, device="cpu")
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"4096^2 default model ({out.meta['DNMODEL']}), 1 torch thread: {dt:.1f} s, "
      f"tile {out.meta['DNTILE']}, overlap {out.meta['DNOVERLP']}, "
      f"peak RSS {rss:.0f} MB (whole process; the image is 64 MB)")
