"""Measured vs expected mean/variance of simulate_short_exposure on flat images.

Run: python benchmarks/noise_statistics.py  (figures quoted in docs/noise_model.rst)
"""
import math
import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astro_unet import simulate_short_exposure

N = 400 * 400
RON = 3.1
DK = 7 / 3600
cases = [
    # label, value, unit, header, kwargs, r, scale_e_per_unit(long), is_rate, t
    ("electron/s", 0.2, "electron/s", {"EXPTIME": 1000.0}, {}, 4, 1000.0, True, 1000.0),
    ("electron", 300.0, "electron", {"EXPTIME": 600.0}, {}, 3, 1.0, False, 600.0),
    ("adu (GAIN=2)", 150.0, "adu", {"EXPTIME": 800.0, "GAIN": 2.0}, {}, 2, 2.0, False, 800.0),
    ("adu/s (gain=1.5)", 0.4, "adu/s", {"EXPTIME": 500.0}, {"gain": 1.5}, 5, 750.0, True, 500.0),
    ("e/s + sky 0.5", 0.0, "electron/s", {"EXPTIME": 400.0}, {"sky": 0.5}, 2, 400.0, True, 400.0),
]
print(f"{'case':18s} {'mean meas':>12s} {'mean exp':>12s} {'z':>6s} "
      f"{'var meas':>12s} {'var exp':>12s} {'z':>6s}")
for label, value, unit, hdr, kw, r, s, is_rate, t in cases:
    ccd = CCDData(np.full((400, 400), value), unit=unit, meta=fits.Header(hdr))
    out = simulate_short_exposure(ccd, r, detector="wfc3_uvis", seed=2021, **kw)
    sky = kw.get("sky", 0.0)
    lam = (value + sky) * s / r
    var_e = lam + DK * t / r + RON ** 2
    out_scale = s / r if is_rate else s
    mean_exp = value if is_rate else value / r
    var_exp = var_e / out_scale ** 2
    k4 = lam / out_scale ** 4
    m, v = out.data.mean(), out.data.var(ddof=1)
    zm = (m - mean_exp) / math.sqrt(var_exp / N)
    zv = (v - var_exp) / math.sqrt((k4 + 2 * var_exp ** 2) / N)
    print(f"{label:18s} {m:12.6g} {mean_exp:12.6g} {zm:6.2f} {v:12.6g} {var_exp:12.6g} {zv:6.2f}")
