#!/usr/bin/env python
# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Make the exposure table of the project's real training images.

The recipes below say, file by file, how each image of the project's data
directory (``../shared/data``) is calibrated: header values where they
exist, otherwise estimates from the image noise with
`astro_unet.training.estimate_gain_from_noise` (and, for the repeated M13
frames, their frame-to-frame differences).  The output is the table the
package ships, ``astro_unet/training/exposures.ecsv``::

    python scripts/make_exposure_table.py ../shared/data -o astro_unet/training/exposures.ecsv

This script is not installed with the package; it needs the data directory
(about two minutes on two cores).
"""

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.table import Table

from astro_unet.training import (
    EXPOSURE_TABLE_COLUMNS, default_data_dir, estimate_gain_from_noise, measure_noise,
)
# the library's own parsing of HDU names and rate units, and its robust variance
from astro_unet._validation import is_rate
from astro_unet.training.data import _hdu_key
from astro_unet.training.noise import _robust_variance

#: Read noise of HST detectors (electrons per read) used in the table.
_HST_RON = {"wfc3_uvis": 3.1, "acs_wfc": 4.7, "wfpc2": 5.2}

#: DECam zero points (AB mag giving 1 e-/s), Legacy Surveys nominal values.
_DECAM_ZP = {"g": 25.08, "r": 25.29, "z": 24.92}

#: Nominal dark-sky brightness for DECam (mag/arcsec^2; Legacy Surveys
#: observing-strategy values) and SDSS (Stoughton et al. 2002), used to anchor
#: the noise of sky-subtracted ground-based coadds.
_SKY_MAG = {"decam": {"g": 22.04, "r": 20.91, "z": 18.46},
            "sdss": {"g": 21.9, "r": 20.9, "i": 20.1}}

#: Typical SDSS g-band gain (e-/DN; the six camcols span 3.3-4.05).
_SDSS_G_GAIN = 3.85

_SLACS = ("0753+3416", "1051+4439", "1430+6104",      # sky not subtracted first
          "0029-0055", "0737+3216", "0956+5100", "1627-0053")


def _recipes():
    """How each file of the data directory is calibrated (static facts + methods)."""
    r = []
    for name, ncomb, split in (("wfc3uvis_f555w_hla_11360_e1_crop.fits", 3, "test"),
                               ("wfc3uvis_f606w_hla_11730_04_crop.fits", 4, "test")):
        r.append(dict(
            path=f"hst/{name}", hdu="0", unit="electron/s", gain=1.0,
            gain_source="unit electron/s", exptime="noise", sky="none", sky_subtracted=False,
            read_noise=_HST_RON["wfc3_uvis"] * math.sqrt(ncomb),
            ron_note=f"3.1 e- x sqrt(NCOMBINE={ncomb})", split=split,
            notes="paper validation field, kept out of training; HLA drizzled crop without "
                  "EXPTIME; background B taken as the full sky (HLA may have subtracted part "
                  "of it: then the exposure time is a lower bound)"))
    r.append(dict(
        path="hst/wfpc2_f814w_abell478_sci_wht.fits", hdu="SCI", weight_hdu="WHT",
        unit="count/s", gain="header:ATODGAIN", exptime="header:EXPTIME", sky="none",
        sky_subtracted=False, read_noise=_HST_RON["wfpc2"],
        ron_note="WFPC2 ~5.2 e- at gain 7, one read", split="test",
        notes="extra test field; one 600 s exposure drizzled (4 chips; no cosmic-ray "
              "rejection: cosmic rays remain in the truth); WHT<=0 masked"))
    for name in _SLACS:
        r.append(dict(
            path=f"hst/acs_f814w_slacs_sdssj{name}.fits", hdu="SCI", unit="electron/s",
            gain=1.0, gain_source="unit electron/s", exptime="noise", sky="mdrizsky",
            sky_subtracted="mdrizsky", read_noise="acs-ncombine", split="train",
            notes="SLACS lens, HLA drizzled cutout 198x198 (smaller than a 256 crop)"))
    r.append(dict(
        path="hst/acs_f814w_slacs0728_noheader.fits", hdu="0", unit="electron/s", gain=1.0,
        gain_source="unit assumed electron/s (no header)", exptime="noise", sky="acs-rate",
        sky_subtracted=True, read_noise=_HST_RON["acs_wfc"] * math.sqrt(2),
        ron_note="4.7 e- x sqrt(2 exposures, assumed)", split="validation",
        notes="headerless PyAutoLens cutout (0.05 arcsec/px); unit e/s assumed (values, "
              "MANIFEST); sky subtracted (background median ~0)"))
    r.append(dict(
        path="hst/acs_f814w_rxj1131_noheader.fits", hdu="0", unit="electron/s", gain=1.0,
        gain_source="unit assumed electron/s (no header)", exptime="noise", sky="acs-rate",
        sky_subtracted=True, read_noise=_HST_RON["acs_wfc"] * 2.0,
        ron_note="4.7 e- x sqrt(4 exposures, assumed)", split="train",
        notes="headerless lensed-quasar cutout; unit e/s assumed; sky taken as subtracted"))
    for i in (1, 2, 3):
        r.append(dict(
            path=f"hst/acs_f814w_cosmos_cut{i}.fits", hdu="0", unit="adu", gain="noise",
            exptime=2028.0, exptime_source="nominal COSMOS ACS F814W depth 4 x 507 s "
                                           "(Koekemoer et al. 2007); not in the header",
            sky="acs-rate-cosmos", sky_subtracted=True,
            read_noise=_HST_RON["acs_wfc"] * 2.0 * 0.6,
            ron_note="4.7 e- x sqrt(4 exposures) x 0.03/0.05 (drizzled to smaller pixels)",
            split="train",
            notes="COSMOS mosaic cutout 0.03 arcsec/px; no BUNIT and an unknown scale of "
                  "values: unit 'adu' stands for that unknown unit"))
    r.append(dict(
        path="hst/acs_f814w_cosmos_galsim_stamp.fits", hdu="0", unit="electron/s", gain=1.0,
        gain_source="-", exptime="header:EXPTIME", sky="none", sky_subtracted=True,
        read_noise=0.0, split="excluded",
        notes="GalSim COSMOS stamp: neighbours replaced by synthetic noise, BUNIT "
              "contradicts the values; not a real noise field"))
    r.append(dict(
        path="hst/wfpc2_f606w_hdfs.fits", hdu="DATA", unit="adu", gain=1.0,
        gain_source="-", exptime="header:EXPTIME", sky="none", sky_subtracted=True,
        read_noise=0.0, split="excluded",
        notes="HDF-S WFPC2 drizzled mosaic with unlabelled, normalised units: the photon "
              "transfer is not constrained (its faint galaxies never exceed the sky noise) "
              "and there is no sky level to anchor the background method, so no electron "
              "scale can be given; excluded rather than guessed"))
    # ground-based
    r.append(dict(
        path="ground/ctio_mosaic2_i_tanpv.fits", hdu="0", unit="adu", gain="noise",
        saturation=44000.0,
        exptime="header:EXPTIME", sky="none", sky_subtracted=False, read_noise=6.0,
        ron_note="typical Mosaic2 (assumed)", split="train",
        notes="reduced Mosaic2 cutout, sky present; saturation = header SATURATE"))
    r.append(dict(
        path="ground/des_r.fits.fz", hdu="0", unit="adu", gain="header:GAIN",
        exptime="header:EXPTIME", sky="noise", sky_subtracted=True,
        read_noise=7.0 * math.sqrt(8), ron_note="~7 e- x sqrt(~8 exposures) (assumed)",
        split="train",
        notes="DES coadd (ZP 30): BUNIT says COUNTS/S but electrons = value x GAIN (the "
              "noise agrees); sky subtracted, sky_level from the noise"))
    for band in "grz":
        r.append(dict(
            path=f"ground/legacysurvey_{band}.fits.fz", hdu="0", unit="nanomaggy",
            saturation=9.999, gain="noise", exptime=f"decam-zp:{band}",
            sky=f"nominal:decam:{band}:0.262",
            sky_subtracted=True, read_noise=7.0 * math.sqrt(3),
            ron_note="~7 e- x sqrt(3 passes) (assumed)", split="train",
            notes="Legacy Survey DECam coadd, nanomaggy, sky subtracted; resampled "
                  "(noise correlated); ~1000 pixels of saturated cores pinned at 10 nmgy: "
                  "saturation 9.999 masks them"))
    for band in "gri":
        r.append(dict(
            path=f"ground/sdss_{band}_reprojected.fits", hdu="0", unit="nanomaggy",
            gain="sdss" if band == "g" else "noise", exptime="header:EXPTIME",
            sky=f"nominal:sdss:{band}:0.1622", sky_subtracted=True, read_noise=0.0,
            ron_note="neglected (sky-dominated)", split="train",
            notes="SDSS frame reprojected to 0.162 arcsec/px (flux-conserving, judging by the "
                  "noise), nanomaggy, sky subtracted; header copied from g (NMGY valid for g "
                  "only)"))
    for i in range(1, 6):
        r.append(dict(
            path=f"ground/m13_blue_000{i}.fits", hdu="0", unit="adu", zero_level=500.0,
            saturation=65535.0,
            gain="m13", exptime="header:EXPTIME", sky="none", sky_subtracted=False,
            read_noise="m13", split="realnoise",
            notes="raw 5 s amateur CCD frame (PEDESTAL -500 removed: zero_level 500), not "
                  "flat-fielded; kept for the real-noise check"))
    r.append(dict(
        path="ground/m51_b.fits", hdu="0", unit="adu", gain="noise", exptime="header:ITIME",
        sky="none", sky_subtracted=False, read_noise=10.0,
        ron_note="1987 KPNO CCD (assumed)", split="train",
        notes="KPNO 1987 CCD frame, overscan and flat corrected; EXPTIME missing: ITIME = "
              "OTIME = 600 s and OBJECT 'm51 B 600s'"))
    r.append(dict(
        path="ground/ntt_emmi_r_sep.fits", hdu="0", unit="adu", gain="noise",
        exptime="header:EXPTIME", sky="none", sky_subtracted=False,
        read_noise=5.0 * math.sqrt(3), ron_note="~5 e- x sqrt(3 frames) (assumed)",
        split="validation",
        notes="NTT/EMMI R, sum of 3 x 400 s, bias and flat corrected; header ESO DET "
              "AD_VALUE = 2.1 (meaning for this sum unclear): the lower noise value is "
              "used (conservative)"))
    r.append(dict(
        path="ground/saao_raw_ccdproc.fits", hdu="0", unit="adu", saturation=65535.0,
        bias_section="[4:13,1:520]", trim_section="[17:528,1:520]", gain="header:GAIN",
        exptime="header:EXPTIME", sky="none", sky_subtracted=False,
        read_noise="header:RDNOISE", split="train",
        notes="raw frame: overscan (BIASSEC) median subtracted row by row, trimmed to "
              "TRIMSEC; not flat-fielded"))
    return r


def _repeat_noise(frames, zero_level):
    """Temporal noise (data units) and level of the fainter 80 % of repeated frames."""
    stack = np.array(frames, dtype=float) - zero_level
    mean = stack.mean(axis=0)
    resid = stack - mean
    n = stack.shape[0]
    bg = mean < np.percentile(mean, 80)
    var = _robust_variance(resid[:, bg].ravel()) * n / (n - 1)
    return math.sqrt(var), float(np.median(mean[bg]))


def make_exposure_table(data_dir=None):
    """
    Compute the exposure table for the project's real images.

    Header values are taken where they exist; the rest is estimated from the
    noise with `estimate_gain_from_noise` (and, for the repeated M13 frames,
    from their frame-to-frame differences).  Each row says how its numbers
    were obtained.  The shipped ``exposures.ecsv`` is the output of
    ``python scripts/make_exposure_table.py DATA_DIR -o FILE``.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Directory holding ``hst/`` and ``ground/`` (default:
        ``ASTRO_UNET_DATA``).

    Returns
    -------
    table : `~astropy.table.Table`
        Columns `EXPOSURE_TABLE_COLUMNS`.

    Raises
    ------
    FileNotFoundError
        A file of the recipe list is missing.
    """
    data_dir = default_data_dir(data_dir)
    rows = []
    cache = {}
    for rec in _recipes():
        try:
            rows.append(_table_row(rec, data_dir, cache))
        except ValueError as exc:
            raise ValueError(f"{rec['path']}: {exc}") from exc
    table = Table(rows=rows, names=EXPOSURE_TABLE_COLUMNS)
    for col in ("zero_level", "exposure_time", "gain", "read_noise", "sky_level",
                "noise_correlation"):
        table[col] = [float(f"{v:.5g}") for v in table[col]]
    table["exposure_time"].unit = u.s
    table["read_noise"].unit = u.electron
    table["sky_level"].unit = u.electron
    table.meta["comments"] = [
        "astro_unet training images: calibration of ../shared/data (the data are not in the "
        "repository).",
        "Made by: python scripts/make_exposure_table.py ../shared/data "
        "-o astro_unet/training/exposures.ecsv",
        "electrons = (data - zero_level) * gain, times exposure_time for rate units.",
        "Noise estimates: astro_unet.training.estimate_gain_from_noise; background "
        "method V k^2 = (B+s) k + S + R^2 with V the correlation-corrected variance; "
        "photon transfer = slope of variance vs signal.",
        "sky_level [e-]: background per pixel, present in the data unless sky_subtracted "
        "(then: the level that was removed, for simulate_short_exposure(sky=...)).",
    ]
    return table


def _read_any(path, hdu):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path) as hdul:
            h = hdul[_hdu_key(hdu)]
            return np.array(h.data, dtype=float), h.header.copy(), hdul[0].header.copy()


def _table_row(rec, data_dir, cache):
    """One row of the exposure table from one recipe (see `_recipes`)."""
    path = Path(data_dir) / rec["path"]
    if not path.exists():
        raise FileNotFoundError(path)
    data, header, primary = _read_any(path, rec["hdu"])
    notes = [rec.get("notes", "")]
    zero = float(rec.get("zero_level", 0.0))
    saturated = data >= rec["saturation"] if rec.get("saturation") else None
    data = data - zero
    if rec.get("bias_section"):
        from ccdproc.utils.slices import slice_from_string

        over = data[slice_from_string(rec["bias_section"], fits_convention=True)]
        data = data - np.median(over, axis=1, keepdims=True)
        trim = slice_from_string(rec["trim_section"], fits_convention=True)
        data = data[trim]
        if saturated is not None:
            saturated = saturated[trim]
    wmask = saturated
    if rec.get("weight_hdu"):
        weight, _, _ = _read_any(path, rec["weight_hdu"])
        wmask = ~(weight > 0) if wmask is None else wmask | ~(weight > 0)

    def hdr(key):
        for h in (header, primary):
            if key in h:
                return h[key]
        return None

    unit = rec["unit"]
    rate = is_rate(u.Unit(unit))
    ncomb = int(hdr("NCOMBINE") or 0)
    mdriz = float(hdr("MDRIZSKY") or 0.0)
    noise = measure_noise(data, mask=wmask)

    # --- read noise
    ron, ron_note = rec.get("read_noise"), rec.get("ron_note", "")
    if isinstance(ron, str) and ron.startswith("header:"):
        ron = float(hdr(ron.split(":")[1]))
        ron_note = "header RDNOISE"
    elif ron == "acs-ncombine":
        ron = _HST_RON["acs_wfc"] * math.sqrt(max(ncomb, 1))
        ron_note = f"4.7 e- x sqrt(NCOMBINE={max(ncomb, 1)})"
    elif ron == "m13":
        ron = None  # below

    # --- sky subtraction and the subtracted sky
    skysub = rec.get("sky_subtracted")
    sky_kw = {}
    if rec["sky"] == "mdrizsky":
        skysub = mdriz > 0
        notes.append(f"MDRIZSKY={mdriz:.4g} e-" + (
            f" per exposure subtracted: S = MDRIZSKY x NCOMBINE = {mdriz * max(ncomb, 1):.4g} e-"
            if skysub else ": sky not subtracted"))
        if skysub:
            sky_kw = dict(subtracted_sky_electrons=mdriz * max(ncomb, 1))
    elif rec["sky"].startswith("nominal:"):
        _, system, band, scale = rec["sky"].split(":")
        mag = _SKY_MAG[system][band]
        s_nmgy = 10 ** (-0.4 * (mag - 22.5)) * float(scale) ** 2
        sky_kw = dict(subtracted_sky=s_nmgy)
        notes.append(f"subtracted sky assumed {s_nmgy:.4g} nmgy/px: nominal {system.upper()} "
                     f"{band} sky {mag} mag/arcsec^2 x ({scale} arcsec)^2")
    elif rec["sky"] in ("acs-rate", "acs-rate-cosmos"):
        rate_e = cache.get("acs_sky_rate")
        if rate_e is None:
            raise ValueError("the ACS sky rate must be measured first (SLACS rows).")
        if rec["sky"] == "acs-rate":
            sky_kw = dict(subtracted_sky=rate_e)
            notes.append(f"subtracted sky assumed {rate_e:.3g} e/s/px (ACS F814W background "
                         "measured on the unsubtracted SLACS cutouts)")
        else:
            s_e = rate_e * (0.03 / 0.05) ** 2 * float(rec["exptime"])
            sky_kw = dict(subtracted_sky_electrons=s_e)
            notes.append(f"subtracted sky assumed {s_e:.3g} e-/px = {rate_e:.3g} e/s per "
                         "0.05 arcsec px (SLACS, unsubtracted) x (0.03/0.05)^2 x 2028 s")

    exptime, exptime_source = rec.get("exptime"), rec.get("exptime_source", "")
    gain, gain_source = rec.get("gain"), rec.get("gain_source", "")
    sky_e = None

    if isinstance(exptime, str) and exptime.startswith("header:"):
        key = exptime.split(":")[1]
        exptime = float(hdr(key))
        exptime_source = f"header {key}"
        if ncomb > 1:
            exptime_source += f" (NCOMBINE={ncomb})"

    def estimate(**kw):
        return estimate_gain_from_noise(data, mask=wmask, read_noise=ron or 0.0, **kw)

    def cross_check():
        try:
            pt = estimate(method="photon transfer")
            notes.append(f"photon-transfer cross-check: {pt.gain:.4g}")
        except ValueError as exc:
            notes.append(f"photon-transfer cross-check not possible ({exc})")

    if exptime == "noise":  # electron/s image: electrons per unit = exposure time
        est = estimate(method="background", **sky_kw)
        exptime, sky_e = est.gain, est.sky_level
        exptime_source = f"estimated from background noise: {est.description}"
        if ncomb:
            exptime_source += f"; NCOMBINE={ncomb}"
        cross_check()
        if rec["path"].startswith("hst/acs_f814w_slacs_") and not skysub:
            cache.setdefault("acs_rates", []).append(noise.background)
            cache["acs_sky_rate"] = float(np.median(cache["acs_rates"]))
    elif isinstance(exptime, str) and exptime.startswith("decam-zp:"):
        pass  # from the gain, below
    else:
        exptime = float(exptime)

    if gain == "noise":
        est = estimate(method="background", **sky_kw)
        cross_check()
        gain, sky_e = est.gain, est.sky_level
        gain_source = f"estimated from noise: {est.description}"
        if isinstance(exptime, str) and exptime.startswith("decam-zp:"):
            band = exptime.split(":")[1]
            per_nmgy = 10 ** (0.4 * (_DECAM_ZP[band] - 22.5))
            exptime = gain / per_nmgy
            exptime_source = (f"estimated from noise: effective gain / DECam {band} zero "
                              f"point {_DECAM_ZP[band]} ({per_nmgy:.3g} e-/s per nmgy)")
    elif isinstance(gain, str) and gain.startswith("header:"):
        key = gain.split(":")[1]
        gain = float(hdr(key))
        gain_source = f"header {key}"
        k = gain * (exptime if rate else 1.0)
        try:
            chk = estimate(method="background" if not skysub else "photon transfer")
            notes.append(f"noise cross-check ({chk.method}): {chk.gain:.4g} e-/unit vs "
                         f"{k:.4g}")
        except ValueError as exc:
            notes.append(f"noise cross-check not possible ({exc})")
    elif gain == "sdss":
        nmgy = float(hdr("NMGY"))
        gain = _SDSS_G_GAIN / nmgy
        gain_source = (f"header NMGY={nmgy:.6g} nmgy/DN with the typical SDSS g gain "
                       f"{_SDSS_G_GAIN} e-/DN")
        chk = estimate(method="background", **sky_kw)
        notes.append(f"noise cross-check (background, nominal sky): {chk.gain:.4g}")
        cross_check()
    elif gain == "m13":
        if "m13" not in cache:
            frames = [_read_any(Path(data_dir) / f"ground/m13_blue_000{i}.fits", 0)[0]
                      for i in range(1, 6)]
            cache["m13"] = _repeat_noise(frames, zero)
        sigma_t, level = cache["m13"]
        gain = 1.0
        gain_source = ("assumed 1 e-/DN: not measurable (read-noise dominated; the "
                       f"frame-to-frame noise, {sigma_t:.3g} DN, does not grow with the signal)")
        ron = math.sqrt(max(sigma_t ** 2 - max(level, 0.0), 0.0))
        ron_note = (f"frame-to-frame rms of the 5 frames ({sigma_t:.3g} DN) minus sky "
                    "Poisson, at gain 1")
        sky_e = max(level, 0.0)

    if gain is None or not np.isfinite(float(gain)):
        raise ValueError("no gain.")
    gain = float(gain)
    if sky_e is None:
        k = gain * (exptime if rate else 1.0)
        if skysub:
            var_e = noise.variance * k * k
            sky_e = max(var_e - (ron or 0.0) ** 2 - noise.background * k, 0.0)
            notes.append("sky_level from the background variance")
        else:
            sky_e = noise.background * k
    if ron_note:
        notes.append(f"RON: {ron_note}")
    return [
        rec["path"], str(rec["hdu"]), rec.get("weight_hdu", ""), unit, float(zero),
        rec.get("bias_section", ""), rec.get("trim_section", ""),
        float(rec.get("saturation", 0.0)), float(exptime),
        exptime_source, gain, gain_source, float(ron or 0.0), float(sky_e), bool(skysub),
        float(noise.correlation), rec["split"], "; ".join(n for n in notes if n),
    ]


def main(argv=None):
    """``python scripts/make_exposure_table.py DATA_DIR [-o FILE]``."""
    parser = argparse.ArgumentParser(prog="python scripts/make_exposure_table.py",
                                     description=__doc__.split("\n")[1])
    parser.add_argument("data_dir", metavar="DATA_DIR", nargs="?", default=None,
                        help="directory of the real images (../shared/data; default: the "
                             "ASTRO_UNET_DATA environment variable)")
    parser.add_argument("-o", "--output", default=None,
                        help="ECSV file to write (default: print to stdout)")
    args = parser.parse_args(argv)
    table = make_exposure_table(args.data_dir)
    if args.output:
        table.write(args.output, format="ascii.ecsv", overwrite=True)
    else:
        table.write(sys.stdout, format="ascii.ecsv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
