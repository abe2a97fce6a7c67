"""
Cosmic-ray recovery of ``clean_cosmic_rays`` on the synthetic star fields of
the test suite (40 stars, 50 injected cosmic-ray events, seeds 1-20), in
electron, electron/s and adu.

Run: python benchmarks/cosmic_ray_recovery.py
"""
from astropy.nddata import CCDData

from astro_unet import clean_cosmic_rays
from astro_unet.tests.test_cosmics import EXPTIME, GAIN, RON, _rates, _star_field

totals = {"cr_pixels": 0, "cr_found": 0, "core_pixels": 0, "core_flagged": 0}
for seed in range(1, 21):
    data, truth, crs, events, cores = _star_field(seed)
    res = []
    for unit, f, kw in [("electron", 1, {}),
                        ("electron/s", 1 / EXPTIME, {"exposure_time": EXPTIME}),
                        ("adu", 1 / GAIN, {"gain": GAIN})]:
        _, m = clean_cosmic_rays(CCDData(data * f, unit=unit), read_noise=RON,
                                 return_mask=True, **kw)
        p, e, c, ff = _rates(m, crs, events, cores)
        res.append(f"{unit}: pix {p:.3f} ev {e:.3f} core {c:.4f}")
        if unit == "electron":
            totals["cr_pixels"] += int(crs.sum())
            totals["cr_found"] += int((m & crs).sum())
            totals["core_pixels"] += int((cores & ~crs).sum())
            totals["core_flagged"] += int((m & cores & ~crs).sum())
    print(seed, " | ".join(res))
print(f"cosmic-ray pixels found: {totals['cr_found']}/{totals['cr_pixels']} "
      f"({100 * totals['cr_found'] / totals['cr_pixels']:.2f} %); star-core pixels flagged: "
      f"{totals['core_flagged']}/{totals['core_pixels']} "
      f"({100 * totals['core_flagged'] / totals['core_pixels']:.2f} %)")
