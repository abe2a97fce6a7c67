# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Quality benchmark of `astro_unet.denoise_ccd` against classical denoisers.

The paper's protocol (Vojtekova et al. 2021, Sect. 4), on real images kept
out of training (split ``test`` of ``astro_unet/training/exposures.ecsv``):

* **Images.**  The two WFC3/UVIS HLA crops (the paper's validation fields)
  and the WFPC2 Abell 478 field (one 600 s exposure without cosmic-ray
  rejection: its truth is cleaned with `astro_unet.clean_cosmic_rays` by
  default, see ``--clean-cosmics``), loaded in electrons with
  `astro_unet.training.data.load_training_image` (units, gain, exposure
  time and mask from the project's exposure table) and converted to
  electron/s with the table's exposure time ``t``.
* **Ground truth** = the real image.  **Input** =
  ``simulate_short_exposure(truth, r, read_noise=<table>,
  dark_current=<detector preset: WFC3/UVIS 7 e-/hr, ACS/WFC 0.0161 e-/s,
  else 0>, sky=<table's subtracted sky if the image is sky-subtracted>,
  seed=<fixed>)`` at r = 2, 3, 4, 5; the seed of image ``i`` (0-based, in
  the order given) at ratio ``r`` is ``seed + 100 i + round(10 r)``.
* **Methods.**  The noisy input itself; a Gaussian filter (sigma 1 px,
  fixed, not tuned on these images); a 3x3 median filter; wavelet
  BayesShrink (scikit-image, sigma estimated from the image) on the image
  (``wavelet``) and in the generalised-Anscombe space (``wavelet_vst``: on
  HST images the former is nearly the identity, see
  ``benchmarks/_baselines.py``); BM3D (the
  ``bm3d`` package, in the generalised-Anscombe space by default, sigma from
  a robust estimate; see ``benchmarks/_baselines.py``); every network given
  with ``--model``, run as ``denoise_ccd(short, ratio=r, model=...,
  read_noise=<table>)`` on the simulated electron/s CCDData (``EXPTIME =
  t/r``).
* **Metrics.**  `astro_unet.photometric_comparison` (truth, method output,
  ``input=short``) with the paper's detection settings: 7 sigma, 10 pixels,
  aperture radius 5 px (diameter 10), deblending 32/0.005, 64 px background
  meshes.  Two threshold modes: (a) ``threshold="self"`` (the paper: every
  image at 7 times its own background rms) and (b)
  ``threshold="reference"`` (every image at the ground truth's absolute
  7-sigma level).  Images are passed without an uncertainty and without an
  exposure time, so that every image gets the same flux-error model --
  background rms only, SExtractor's ``GAIN = 0`` default -- and the SNR gain
  (paper eq. 28) measures what the method did to the background noise.
  Per ratio the sources of all images are pooled: TPR = sum matched / sum
  reference detections, precision = sum matched / sum test detections,
  F = 2PR/(P+R), RFE = mean (standard error) of
  ``|F_test - F_ref| / F_ref`` over all matched sources with positive
  reference flux (per cent), SNR gain = mean SNR ratio over all matched
  sources; PSNR, SSIM and KL are the means over the images; seconds = mean
  wall time of one call of the method per image.  The CSV also has every
  image separately.
* **Hallucination check.**  Blank frames (no sources: the sky of
  `astro_unet.training.pure_sky_scene`, its level set to each evaluation
  image's background, ``t``, read noise and dark current of that image)
  degraded at each ratio; detections are counted (a) at 7 times each
  image's own rms and (b) at the noisy input's absolute 7-sigma level
  (``photometric_comparison(reference=input, test=output,
  threshold="reference")``).  Target: no more detections than the input.
* **Real-noise check** (no simulation).  Five real 5 s frames of M13
  (split ``realnoise``): frame 1 is the input (denoised with r = 4), the mean
  of frames 2-5 (20 s of independent noise) is the reference.
* **Coverage** (only for models with ``out_channels == 2``): fraction of
  pixels with ``|truth - output| <= sigma`` on noiseless synthetic WFC3/UVIS
  scenes (`astro_unet.training.render_scene`, ``t`` = 800 s); target
  0.68 +- 0.05.

* **Forced photometry.**  Aperture sums (diameter 10 px, the comparison's
  Background2D) of every output at the positions of the ground truth's
  detections (threshold (b)): median relative flux bias and its scatter
  (1.4826 MAD) by thirds of the true flux, pooled over the images, and the
  median bias of the sources with a true SNR above 100.
* **Estimates.**  Models run with ``denoise_ccd(estimate=...)``; with
  ``--estimates long mean`` each model is evaluated both ways (labels
  ``<label>-long``, ``<label>-mean``).  The coverage section covers every
  model: for one-channel models it tests the Poisson estimate of a long
  exposure (``DNUNCERT = 'poisson-estimate'``).

Targets for the shipped default model (label ``--target-model``):
TPR >= 0.96 at r=2 and >= 0.93 at r=5 at threshold (b); F above every
classical baseline at every ratio under both thresholds; mean RFE at or
below the noisy input's at every ratio under both thresholds; forced
photometry at r = 2 and 5: median bias of every third no further from zero
than the input's plus 1 percentage point, and scatter below the input's, and |bias| < 0.5 % for
sources of SNR > 100; blank frames: no more detections than the input at
the output's own 7 sigma and at the input's level; M13: no more spurious
(unmatched) detections than BM3D.  A PASS/FAIL line is printed (and
written) for each.

Usage::

    # the full benchmark (the lead's run; --cache makes a rerun with other models
    # skip the classical baselines, BM3D above all)
    python benchmarks/quality.py --model default=default --model paper=/path/paper.pt \
        --cache /tmp/astro_unet_quality_cache
    # development: one image, r = 2 and 5, no BM3D
    python benchmarks/quality.py --quick --model tiny=/tmp/tiny.pt
    # a random development model (NOT a result)
    python benchmarks/quality.py --write-tiny-model /tmp/tiny.pt

Outputs: ``benchmarks/results/quality.rst`` (tables for the docs) and
``benchmarks/results/quality.csv`` (``quality_quick.*`` with ``--quick``),
each starting with the exact command and the date.
"""

import argparse
import csv
import datetime
import hashlib
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.nddata import CCDData

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _baselines  # noqa: E402

from astro_unet import denoise_ccd, photometric_comparison, simulate_short_exposure  # noqa: E402
from astro_unet import metrics as _metrics  # noqa: E402
from astro_unet.simulate import DETECTOR_PRESETS  # noqa: E402
from astro_unet.training.data import (  # noqa: E402
    default_data_dir, load_training_image, read_exposure_table,
)

TEST_IMAGES = (
    "hst/wfc3uvis_f555w_hla_11360_e1_crop.fits",
    "hst/wfc3uvis_f606w_hla_11730_04_crop.fits",
    "hst/wfpc2_f814w_abell478_sci_wht.fits",
)
QUICK_IMAGES = TEST_IMAGES[:1]
#: Truths cleaned of cosmic rays by default (single exposures without CR rejection).
CLEAN_COSMICS_DEFAULT = ("hst/wfpc2_f814w_abell478_sci_wht.fits",)
M13_FRAMES = tuple(f"ground/m13_blue_000{i}.fits" for i in range(1, 6))
CLASSICAL = ("gaussian", "median", "wavelet", "wavelet_vst", "bm3d")
ALL_METHODS = ("input",) + CLASSICAL
THRESHOLDS = ("self", "reference")
#: Bump when a baseline changes, to invalidate ``--cache`` entries.
CACHE_VERSION = 1
THRESHOLD_TITLE = {
    "self": "(a) paper protocol: every image thresholded at 7 x its own background rms",
    "reference": "(b) every image thresholded at the ground truth's absolute 7-sigma level",
}
DETECTION = dict(detection_threshold=7.0, min_area=10, aperture_radius=5.0)

#: Vojtekova et al. (2021) Table 2 (their test set), the values quoted in the issue.
PAPER_ROWS = (
    dict(ratio=2.0, method="paper: noisy input", tpr=0.681, rfe_mean=1.55),
    dict(ratio=2.0, method="paper: Network 1", tpr=0.959, rfe_mean=2.26, f_measure=0.86,
         snr_gain=1.63),
    dict(ratio=5.0, method="paper: Network 2", tpr=0.933, rfe_mean=4.13, snr_gain=2.55),
)

CSV_FIELDS = (
    "section", "threshold", "image", "ratio", "method", "seed", "n_reference", "n_test",
    "n_matched", "tpr", "precision", "f_measure", "rfe_mean", "rfe_err", "rfe_median",
    "snr_gain", "psnr", "ssim", "kl", "seconds", "coverage", "residual_rms", "n_pixels",
    "bias_faint", "bias_mid", "bias_bright", "scatter_faint", "scatter_mid", "scatter_bright",
    "bias_snr100", "n_forced", "note",
)
#: Flux thirds of the forced photometry.
THIRDS = ("faint", "mid", "bright")


# --------------------------------------------------------------------------- helpers
def log(msg):
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", flush=True)


def evaluation_setup(args):
    """
    ``(data_dir, table)`` of ``--data-dir`` and ``--table``.

    Also defaults and checks ``args.clean_cosmics`` against ``args.images``
    and warns about images that are not in the ``test`` split.
    """
    data_dir = args.data_dir
    if data_dir is None and not os.environ.get("ASTRO_UNET_DATA"):
        data_dir = HERE.parent.parent / "shared" / "data"
    data_dir = default_data_dir(data_dir)
    table = read_exposure_table(args.table)
    if args.clean_cosmics is None:
        args.clean_cosmics = [p for p in CLEAN_COSMICS_DEFAULT if p in args.images]
    unknown = [p for p in args.clean_cosmics if p not in args.images]
    if unknown:
        raise SystemExit(f"--clean-cosmics {unknown}: not among the evaluation images.")
    for p in args.images:
        row = table_row(table, p)
        if str(row["split"]) != "test":
            warnings.warn(f"{p} is in split {row['split']!r}, not 'test'.")
    return data_dir, table


def warm_up(spec, device):
    """One tiny call: model file, effective receptive field, oneDNN set-up (not timed)."""
    warm = CCDData(np.random.default_rng(0).poisson(50.0, (64, 64)).astype(float),
                   unit=u.electron, meta={"EXPTIME": 10.0})
    denoise_ccd(warm, ratio=2.0, model=spec, device=device, read_noise=3.0)


def run_header(script, argv, args):
    """The first lines of a benchmark's results: command, date, git, machine, load, images."""
    command = "python " + " ".join(shlex.quote(a) for a in
                                   [os.path.relpath(script, os.getcwd())] + list(argv))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return [
        f"command: {command}",
        f"date: {now}",
        f"git: {git_state()}",
        f"machine: {machine()}",
        f"load average at start: {os.getloadavg()[0]:.2f}",
        f"images: {', '.join(args.images)}; ratios: {', '.join(f'{r:g}' for r in args.ratios)}"
        f"; seed {args.seed}"
        + (f"; truth cleaned of cosmic rays: {', '.join(args.clean_cosmics)}"
           if args.clean_cosmics else ""),
    ]


def write_csv(path, header_lines, fields, rows):
    """``rows`` (dicts) as CSV with ``# `` header lines; floats to 6 significant digits."""
    with open(path, "w", newline="") as f:
        for line in header_lines:
            f.write(f"# {line}\n")
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def dark_current_for(path):
    """Dark current (e-/s) used for a real image: its detector preset, else 0."""
    name = os.path.basename(str(path)).lower()
    if "wfc3" in name:
        return float(DETECTOR_PRESETS["wfc3_uvis"].dark_current)
    if "acs" in name:
        return float(DETECTOR_PRESETS["acs_wfc"].dark_current)
    return 0.0


def eval_ccd(data, mask):
    """What photometric_comparison sees: data in electron/s, mask, nothing else."""
    return CCDData(np.asarray(data, dtype=np.float64), unit=u.electron / u.s,
                   mask=None if mask is None else np.asarray(mask, dtype=bool))


def table_row(table, path):
    paths = [str(p) for p in table["path"]]
    if path not in paths:
        raise SystemExit(f"{path} is not in the exposure table (rows: {', '.join(paths)}).")
    return table[paths.index(path)]


def load_rate(row, data_dir, *, clean_cosmics=False):
    """(rate image CCDData in electron/s with EXPTIME, exposure time) from a table row."""
    ccd = load_training_image(row, data_dir)
    if clean_cosmics:
        from astro_unet import clean_cosmic_rays

        before = np.array(ccd.data, copy=True)
        mask = ccd.mask
        ccd = clean_cosmic_rays(ccd, read_noise=float(row["read_noise"]) * u.electron,
                                gain=1.0)
        # the replaced pixels are data again (cleaned sky), not bad pixels
        ccd = CCDData(ccd.data, unit=ccd.unit, mask=mask, meta=ccd.meta)
        log(f"  clean_cosmic_rays on the truth {row['path']}: "
            f"{int(np.sum(ccd.data != before))} pixels replaced")
    t = float(row["exposure_time"])
    mask = np.asarray(ccd.mask, dtype=bool) if ccd.mask is not None else None
    rate = CCDData(np.asarray(ccd.data, dtype=np.float64) / t, unit=u.electron / u.s,
                   mask=mask, meta={"EXPTIME": t})
    return rate, t


def sky_argument(row):
    """``sky=`` for simulate_short_exposure (electron/s) or None."""
    if bool(row["sky_subtracted"]) and float(row["sky_level"]) > 0:
        return float(row["sky_level"]) / float(row["exposure_time"])
    return None


def parse_models(specs):
    models = []
    for spec in specs or ():
        if "=" in spec:
            label, value = spec.split("=", 1)
        else:
            value = spec
            label = Path(spec).stem if os.path.sep in spec or spec.endswith(".pt") else spec
        label, value = label.strip(), value.strip()
        if not label or not value:
            raise SystemExit(f"--model {spec!r}: expected LABEL=NAME_OR_PATH.")
        if label in ALL_METHODS or label in [m["label"] for m in models]:
            raise SystemExit(f"--model label {label!r} is used twice or is a baseline name.")
        models.append(dict(label=label, spec=value))
    return models


def expand_estimates(models, estimates):
    """One entry per (model, estimate); labels get ``-long``/``-mean`` when several."""
    out = []
    for m in models:
        for est in estimates:
            label = m["label"] if len(estimates) == 1 else f"{m['label']}-{est}"
            out.append(dict(m, label=label, estimate=est))
    return out


def describe_models(models):
    """Load each model once to learn its name, sha256 and number of output channels."""
    from astro_unet.weights import load_model

    for m in models:
        t0 = time.perf_counter()
        try:
            net, info = load_model(m["spec"])
        except (ValueError, OSError) as exc:
            raise SystemExit(f"--model {m['label']}={m['spec']}: cannot load it ({exc}).")
        m["out_channels"] = int(net.config.out_channels)
        m["config"] = net.config
        m["sha256"] = str(info.get("sha256", "unknown"))
        m["name"] = str(info.get("name", m["spec"]))
        m["path"] = str(info.get("path", ""))
        m["normalization"] = info.get("normalization")
        meta = info.get("metadata") or {}
        m["random"] = "random" in (str(meta.get("name", "")) + " "
                                   + str(meta.get("description", ""))).lower()
        m["load_seconds"] = time.perf_counter() - t0


def run_method(method, short, *, ratio, t_short, read_noise, dark, args, models_by_label):
    """Output (electron/s array) of one method on the simulated short exposure."""
    data = np.asarray(short.data, dtype=np.float64)
    mask = None if short.mask is None else np.asarray(short.mask, dtype=bool)
    if method == "input":
        return data.copy()
    if method == "gaussian":
        return _baselines.gaussian(data, mask, sigma=args.gaussian_sigma)
    if method == "median":
        return _baselines.median(data, mask, size=args.median_size)
    if method == "wavelet":
        return _baselines.wavelet(data, mask)
    if method == "wavelet_vst":
        return _baselines.wavelet(data, mask, electrons_per_unit=t_short,
                                  gauss_var=read_noise ** 2 + dark * t_short, space="anscombe")
    if method == "bm3d":
        return _baselines.bm3d_denoise(data, mask, electrons_per_unit=t_short,
                                       gauss_var=read_noise ** 2 + dark * t_short,
                                       space=args.bm3d_space)
    m = models_by_label[method]
    out = denoise_ccd(short, ratio=ratio, model=m["spec"], device=args.device,
                      read_noise=read_noise, estimate=m["estimate"])
    if u.Unit(out.unit) != u.electron / u.s:
        raise RuntimeError(f"denoise_ccd returned {out.unit}, expected electron/s.")
    m["last_output"] = out
    return np.asarray(out.data, dtype=np.float64)


def input_digest(short, key):
    """sha256 (24 hex digits) of a simulated input's pixels and mask and of ``key``."""
    h = hashlib.sha256(np.ascontiguousarray(np.asarray(short.data, dtype=np.float64)).tobytes())
    if short.mask is not None:
        h.update(np.ascontiguousarray(np.asarray(short.mask, bool)).tobytes())
    h.update(repr(key).encode())
    return h.hexdigest()[:24]


def npz_cached(path, compute):
    """
    ``(out, seconds)`` from the ``.npz`` file ``path``, else ``compute()`` kept there.

    ``path`` None: no cache.  A cached output keeps the time measured when it
    was computed.  Written to a temporary file and renamed.
    """
    if path is not None and path.exists():
        with np.load(path) as z:
            return np.array(z["out"]), float(z["seconds"])
    out, seconds = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, out=out, seconds=seconds)
        os.replace(tmp, path)
    return out, seconds


def timed_method(method, short, *, ratio, t_short, read_noise, dark, args, models_by_label):
    """(output, seconds) of one method; classical outputs may come from ``--cache``."""
    cache_file = None
    if args.cache and method in CLASSICAL:
        key = (method, float(ratio), float(t_short), float(read_noise), float(dark),
               args.gaussian_sigma, args.median_size, args.bm3d_space, CACHE_VERSION)
        cache_file = Path(args.cache) / f"{method}_{input_digest(short, key)}.npz"

    def compute():
        t0 = time.perf_counter()
        out = run_method(method, short, ratio=ratio, t_short=t_short, read_noise=read_noise,
                         dark=dark, args=args, models_by_label=models_by_label)
        return out, (time.perf_counter() - t0 if method != "input" else 0.0)

    return npz_cached(cache_file, compute)


def compare(truth_ccd, test_ccd, input_ccd, threshold):
    return photometric_comparison(truth_ccd, test_ccd, input=input_ccd, threshold=threshold,
                                  match="pixel", **DETECTION)


def forced_fluxes(image, mask, x, y):
    """
    Aperture sums of ``image`` at (x, y): radius 5 px, background from the
    same Background2D (64 px meshes) as `astro_unet.photometric_comparison`.
    """
    # the package's own estimators, so truth and outputs are measured alike
    from astro_unet.photometry import _aperture_sums, _background

    data = np.asarray(image, dtype=np.float64)
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    work = np.where(bad, 0.0, data)
    background, rms = _background(work, bad)
    flux, _ = _aperture_sums(work - background, x, y, radius=DETECTION["aperture_radius"],
                             error=np.where(bad, 0.0, rms), bad=bad)
    return flux


def forced_record(truth_table, out, mask):
    """Forced photometry of ``out`` at the truth's detections (from a comparison table)."""
    has = np.isfinite(np.asarray(truth_table["x_ref"], dtype=float))
    x = np.asarray(truth_table["x_ref"], dtype=float)[has]
    y = np.asarray(truth_table["y_ref"], dtype=float)[has]
    f_true = np.asarray(truth_table["flux_ref"].value, dtype=float)[has]
    snr_true = np.asarray(truth_table["snr_ref"], dtype=float)[has]
    f_out = forced_fluxes(out, mask, x, y) if x.size else np.zeros(0)
    return dict(f_true=f_true, f_out=f_out, snr_true=snr_true)


def forced_summary(records):
    """Median relative flux bias and its robust scatter (per cent) by thirds of true flux."""
    f_true = np.concatenate([r["f_true"] for r in records])
    f_out = np.concatenate([r["f_out"] for r in records])
    snr = np.concatenate([r["snr_true"] for r in records])
    ok = np.isfinite(f_true) & np.isfinite(f_out) & (f_true > 0)
    f_true, f_out, snr = f_true[ok], f_out[ok], snr[ok]
    rel = (f_out - f_true) / f_true
    out = dict(n_forced=int(rel.size))
    if rel.size < 3:
        return out
    edges = np.quantile(f_true, [1 / 3, 2 / 3])
    parts = (f_true <= edges[0], (f_true > edges[0]) & (f_true <= edges[1]), f_true > edges[1])
    for name, sel in zip(THIRDS, parts):
        v = rel[sel]
        med = float(np.median(v))
        out[f"bias_{name}"] = 100 * med
        out[f"scatter_{name}"] = 100 * 1.4826 * float(np.median(np.abs(v - med)))
    bright = snr > 100
    out["bias_snr100"] = 100 * float(np.median(rel[bright])) if bright.any() else math.nan
    out["n_snr100"] = int(bright.sum())
    return out


def pooled(records):
    """Pool per-image (table, summary) records of one (ratio, method, threshold)."""
    n_ref = sum(r["summary"]["n_reference"] for r in records)
    n_tst = sum(r["summary"]["n_test"] for r in records)
    n_m = sum(r["summary"]["n_matched"] for r in records)
    tpr = n_m / n_ref if n_ref else math.nan
    prec = n_m / n_tst if n_tst else math.nan
    if n_m == 0:
        f = 0.0 if (n_ref or n_tst) else math.nan
    else:
        f = 2 * tpr * prec / (tpr + prec)
    rel, st, si = [], [], []
    for r in records:
        tab = r["table"]
        m = np.asarray(tab["matched"], dtype=bool)
        f_ref = np.asarray(tab["flux_ref"].value)[m]
        e = np.abs(np.asarray(tab["rel_flux_err"])[m])
        rel.append(e[np.isfinite(e) & (f_ref > 0)])
        if "snr_input" in tab.colnames:
            st.append(np.asarray(tab["snr_test"])[m])
            si.append(np.asarray(tab["snr_input"])[m])
    rel = np.concatenate(rel) if rel else np.zeros(0)
    rfe = float(100 * rel.mean()) if rel.size else math.nan
    rfe_err = float(100 * rel.std(ddof=1) / math.sqrt(rel.size)) if rel.size > 1 else math.nan
    rfe_med = float(100 * np.median(rel)) if rel.size else math.nan
    gain = _metrics.snr_gain(np.concatenate(st), np.concatenate(si)) if st else math.nan

    def mean_of(key):
        v = [r["summary"][key] for r in records]
        v = [x for x in v if np.isfinite(x)]
        return float(np.mean(v)) if v else math.nan

    return dict(n_reference=n_ref, n_test=n_tst, n_matched=n_m, tpr=tpr, precision=prec,
                f_measure=f, rfe_mean=rfe, rfe_err=rfe_err, rfe_median=rfe_med,
                snr_gain=float(gain), psnr=mean_of("psnr"), ssim=mean_of("ssim"),
                kl=mean_of("kl"), seconds=float(np.mean([r["seconds"] for r in records])))


def summary_row(section, threshold, image, ratio, method, s, *, seed="", seconds=math.nan,
                note=""):
    row = {k: "" for k in CSV_FIELDS}
    row.update(section=section, threshold=threshold, image=image, ratio=ratio,
               method=method, seed=seed, note=note)
    for k in ("n_reference", "n_test", "n_matched", "tpr", "precision", "f_measure",
              "rfe_mean", "rfe_err", "rfe_median", "snr_gain", "psnr", "ssim", "kl"):
        if k in s:
            row[k] = s[k]
    row["seconds"] = s.get("seconds", seconds)
    for k in ("bias_faint", "bias_mid", "bias_bright", "scatter_faint", "scatter_mid",
              "scatter_bright", "bias_snr100", "n_forced"):
        if k in s:
            row[k] = s[k]
    return row


# --------------------------------------------------------------------------- sections
def simulated_section(args, table, data_dir, methods, models, csv_rows, save_dir):
    """The main table: per ratio, per method, both threshold modes."""
    models_by_label = {m["label"]: m for m in models}
    per = {}          # (ratio, method, threshold) -> list of records
    forced = {}       # (ratio, method) -> list of forced-photometry records
    for i, path in enumerate(args.images):
        row = table_row(table, path)
        truth, t = load_rate(row, data_dir, clean_cosmics=path in args.clean_cosmics)
        ron = float(row["read_noise"])
        dark = dark_current_for(path)
        sky = sky_argument(row)
        stem = Path(path).name.replace(".fits", "")
        truth_eval = eval_ccd(truth.data, truth.mask)
        log(f"{path}: {truth.shape}, t = {t:.6g} s, RON {ron:.4g} e-, dark {dark:.3g} e-/s, "
            f"sky arg {sky}")
        for r in args.ratios:
            seed = args.seed + 100 * i + int(round(10 * r))
            short = simulate_short_exposure(truth, r, exposure_time=t, read_noise=ron,
                                            dark_current=dark, sky=sky, seed=seed)
            t_short = t / r
            mask = None if short.mask is None else np.asarray(short.mask, dtype=bool)
            input_eval = eval_ccd(short.data, mask)
            for method in methods:
                out, seconds = timed_method(method, short, ratio=r, t_short=t_short,
                                            read_noise=ron, dark=dark, args=args,
                                            models_by_label=models_by_label)
                if save_dir is not None:
                    from astropy.io import fits
                    fits.writeto(save_dir / f"{stem}_r{r:g}_{method}.fits",
                                 out.astype(np.float32), overwrite=True)
                test_eval = eval_ccd(out, mask)
                msg = []
                for thr in THRESHOLDS:
                    tab, s = compare(truth_eval, test_eval, input_eval, thr)
                    per.setdefault((r, method, thr), []).append(
                        dict(table=tab, summary=s, seconds=seconds))
                    if thr == "reference":
                        forced.setdefault((r, method), []).append(
                            forced_record(tab, out, mask))
                    csv_rows.append(summary_row("simulated", thr, stem, r, method, s,
                                                seed=seed, seconds=seconds))
                    msg.append(f"{thr[:3]}: TPR {s['tpr']:.3f} P {s['precision']:.3f} "
                               f"F {s['f_measure']:.3f} RFE {s['rfe_mean']:.2f}%")
                log(f"  r={r:g} {method:>9s} ({seconds:6.1f} s)  " + " | ".join(msg))
        if save_dir is not None:
            from astropy.io import fits
            fits.writeto(save_dir / f"{stem}_truth.fits", truth.data.astype(np.float32),
                         overwrite=True)
    results = {}
    for key, recs in per.items():
        results[key] = pooled(recs)
        r, method, thr = key
        csv_rows.append(summary_row("simulated", thr, "all", r, method, results[key],
                                    note=f"pooled over {len(recs)} image(s)"))
    for key, recs in forced.items():
        r, method = key
        results[("forced", r, method)] = fs = forced_summary(recs)
        csv_rows.append(summary_row("forced", "reference", "all", r, method, fs,
                                    note="median (F_out - F_true) / F_true by thirds of true "
                                         "flux at the truth's detections (per cent); scatter "
                                         "= 1.4826 MAD"))
        log(f"  forced r={r:g} {method:>9s}: bias " + " / ".join(
            fmt(fs.get(f"bias_{t}"), "+.2f") for t in THIRDS) + " %, scatter " + " / ".join(
            fmt(fs.get(f"scatter_{t}"), ".2f") for t in THIRDS) + " %, SNR>100 bias "
            + fmt(fs.get("bias_snr100"), "+.2f") + " %")
    return results


def blank_section(args, table, data_dir, methods, models, csv_rows):
    """Hallucination check on blank sky frames."""
    from astro_unet.training.synthetic import SceneConfig, pure_sky_scene

    models_by_label = {m["label"]: m for m in models}
    counts = {}       # (ratio, method) -> dict(self=..., reference=..., input=...)
    for i, path in enumerate(args.images):
        row = table_row(table, path)
        t = float(row["exposure_time"])
        ron = float(row["read_noise"])
        dark = dark_current_for(path)
        sky_e = float(row["sky_level"])
        level = sky_e / t                                  # e-/s per pixel
        sky_arg = None
        if bool(row["sky_subtracted"]):
            sky_arg = level                                 # removed, photon noise kept
        stem = Path(path).name.replace(".fits", "")
        cfg = replace(SceneConfig.for_instrument("wfc3_uvis"), background=(level, level))
        for k in range(args.blank_frames):
            bseed = args.seed + 5000 + 100 * i + k
            sky, _ = pure_sky_scene(args.blank_size, config=cfg, seed=bseed)
            truth = np.asarray(sky, dtype=np.float64)
            if bool(row["sky_subtracted"]):
                truth = truth - level                      # as the image: sky removed
            truth_ccd = CCDData(truth, unit=u.electron / u.s, meta={"EXPTIME": t})
            for r in args.ratios:
                seed = bseed + int(round(10 * r)) * 7
                short = simulate_short_exposure(truth_ccd, r, exposure_time=t, read_noise=ron,
                                                dark_current=dark, sky=sky_arg, seed=seed)
                input_eval = eval_ccd(short.data, None)
                for method in methods:
                    out, seconds = timed_method(method, short, ratio=r, t_short=t / r,
                                                read_noise=ron, dark=dark, args=args,
                                                models_by_label=models_by_label)
                    test_eval = eval_ccd(out, None)
                    c = counts.setdefault((r, method), dict(self=0, reference=0, input=0,
                                                            frames=0, pixels=0))
                    c["frames"] += 1
                    c["pixels"] += int(truth.size)
                    for thr in THRESHOLDS:
                        _, s = photometric_comparison(input_eval, test_eval, threshold=thr,
                                                      match="pixel", **DETECTION)
                        c[thr] += s["n_test"]
                        if thr == "self":
                            c["input"] += s["n_reference"]
                        row_ = summary_row("blank", thr, f"{stem}_blank{k}", r, method,
                                           dict(n_reference=s["n_reference"],
                                                n_test=s["n_test"]),
                                           seed=seed, seconds=seconds,
                                           note="n_reference: input detections (7 x own rms); "
                                                "n_test: method detections")
                        row_["n_pixels"] = int(truth.size)
                        csv_rows.append(row_)
                log(f"  blank {stem} #{k} r={r:g}: " + ", ".join(
                    f"{m} {counts[(r, m)]['self']}/{counts[(r, m)]['reference']}"
                    for m in methods) + "  (cumulative self/at-input-level)")
    return counts


def realnoise_section(args, table, data_dir, methods, models, csv_rows, save_dir):
    """Frame 1 of M13 denoised at r=4 against the mean of frames 2-5."""
    models_by_label = {m["label"]: m for m in models}
    rows = [table_row(table, p) for p in M13_FRAMES]
    frames, masks = [], []
    for row in rows:
        rate, t = load_rate(row, data_dir)
        frames.append(np.asarray(rate.data))
        masks.append(np.zeros(rate.shape, bool) if rate.mask is None else rate.mask)
    t = float(rows[0]["exposure_time"])
    ron = float(rows[0]["read_noise"])
    if args.realnoise_rows:
        # only these rows: the rest may have been used in training (data.repeated_rows)
        start, stop = args.realnoise_rows
        frames = [f[start:stop] for f in frames]
        masks = [m[start:stop] for m in masks]
    mask = np.any(masks, axis=0)
    ref = np.mean(frames[1:], axis=0)
    good = ~mask
    # the reference's own noise: per-pixel scatter of frames 2-5 / sqrt(4), rms over pixels
    ref_noise = float(np.sqrt(np.mean(np.var(np.asarray(frames[1:])[:, good], axis=0, ddof=1)
                                      / (len(frames) - 1))))
    short = CCDData(frames[0], unit=u.electron / u.s, mask=mask if mask.any() else None,
                    meta={"EXPTIME": t})
    ref_eval = eval_ccd(ref, mask)
    input_eval = eval_ccd(frames[0], mask)
    r = float(args.realnoise_ratio)
    log(f"M13 real-noise check: {short.shape}"
        + (f" (rows {args.realnoise_rows[0]}-{args.realnoise_rows[1]})"
           if args.realnoise_rows else "")
        + f", t = {t:g} s, RON {ron:.4g} e-, r = {r:g}, "
        f"reference = mean of frames 2-{len(frames)}")
    results = {}
    for method in methods:
        out, seconds = timed_method(method, short, ratio=r, t_short=t, read_noise=ron,
                                    dark=0.0, args=args, models_by_label=models_by_label)
        if save_dir is not None:
            from astropy.io import fits
            fits.writeto(save_dir / f"m13_r{r:g}_{method}.fits", out.astype(np.float32),
                         overwrite=True)
        test_eval = eval_ccd(out, mask)
        resid = float(np.sqrt(np.mean((out[good] - ref[good]) ** 2)))
        msg = [f"residual rms {resid:.4g} e-/s"]
        for thr in THRESHOLDS:
            tab, s = compare(ref_eval, test_eval, input_eval, thr)
            s = dict(s, seconds=seconds)
            rec = dict(table=tab, summary=s, seconds=seconds)
            results[(method, thr)] = dict(pooled([rec]), residual_rms=resid,
                                          reference_noise=ref_noise)
            row_ = summary_row("realnoise", thr, "m13_blue_0001", r, method,
                               results[(method, thr)], seconds=seconds,
                               note=f"reference = mean of frames 2-5 (its own noise "
                                    f"{ref_noise:.4g} e-/s rms)")
            row_["residual_rms"] = resid
            csv_rows.append(row_)
            msg.append(f"{thr[:3]}: TPR {s['tpr']:.3f} P {s['precision']:.3f} "
                       f"F {s['f_measure']:.3f} RFE {s['rfe_mean']:.2f}%")
        log(f"  {method:>9s} ({seconds:6.1f} s)  " + " | ".join(msg))
    if save_dir is not None:
        from astropy.io import fits
        fits.writeto(save_dir / "m13_reference_mean2-5.fits", ref.astype(np.float32),
                     overwrite=True)
    return results


def coverage_section(args, models, csv_rows):
    """|truth - output| <= sigma on noiseless synthetic scenes (every model)."""
    from astro_unet.training.synthetic import render_scene

    two = list(models)
    results = {}
    if not two:
        return results
    t = 800.0
    preset = DETECTOR_PRESETS["wfc3_uvis"]
    scenes = [render_scene(args.coverage_size, instrument="wfc3_uvis",
                           seed=args.seed + 9000 + k)[0] for k in range(args.coverage_scenes)]
    for m in two:
        for r in args.ratios:
            inside = total = 0
            inside_src = total_src = 0
            for k, scene in enumerate(scenes):
                truth = np.asarray(scene, dtype=np.float64)
                ccd = CCDData(truth, unit=u.electron / u.s, meta={"EXPTIME": t})
                short = simulate_short_exposure(ccd, r, read_noise=preset.read_noise,
                                                dark_current=preset.dark_current,
                                                seed=args.seed + 9500 + 10 * k
                                                + int(round(10 * r)))
                out = denoise_ccd(short, ratio=r, model=m["spec"], device=args.device,
                                  read_noise=preset.read_noise, estimate=m["estimate"])
                kind = out.meta.get("DNUNCERT", "")
                kind = str(kind[0] if isinstance(kind, tuple) else kind)
                sigma = np.asarray(out.uncertainty.array, dtype=np.float64)
                est = np.asarray(out.data, dtype=np.float64)
                good = np.isfinite(est) & np.isfinite(sigma)
                if out.mask is not None:
                    good &= ~np.asarray(out.mask, bool)
                hit = np.abs(truth - est) <= sigma
                inside += int(hit[good].sum())
                total += int(good.sum())
                # pixels at least 5 short-exposure sigma above the sky: the sources
                sky = np.median(truth)
                src = good & ((truth - sky) * t / r > 5 * np.sqrt(sky * t / r
                                                                  + preset.read_noise ** 2))
                inside_src += int(hit[src].sum())
                total_src += int(src.sum())
            cov = inside / total if total else math.nan
            cov_src = inside_src / total_src if total_src else math.nan
            results[(m["label"], r)] = dict(coverage=cov, coverage_sources=cov_src,
                                            n_pixels=total, n_source_pixels=total_src,
                                            kind=kind)
            row = summary_row("coverage", "", f"render_scene x{len(scenes)}", r, m["label"],
                              {}, note=f"source pixels: coverage {cov_src:.4f} over "
                                       f"{total_src} px")
            row["coverage"] = cov
            row["n_pixels"] = total
            csv_rows.append(row)
            log(f"  coverage {m['label']} r={r:g}: {cov:.4f} (all {total} px), "
                f"{cov_src:.4f} (source pixels, {total_src})")
    return results


# --------------------------------------------------------------------------- reuse
def _csv_number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_baseline_csv(path):
    """The rows of an earlier run's CSV (comment lines skipped)."""
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    return list(csv.DictReader(lines))


def summary_from_row(row):
    """The metrics of one CSV row as numbers (detection counts as integers)."""
    s = {k: _csv_number(row.get(k)) for k in CSV_FIELDS
         if k not in ("section", "threshold", "image", "method", "note")}
    for k in ("n_reference", "n_test", "n_matched"):
        s[k] = int(s[k])
    return s


def reuse_baselines(path, methods_reused, args, results, blank, realnoise):
    """
    Add the rows of ``methods_reused`` from an earlier run's CSV.

    Only valid for identical inputs: the noisy-input rows of that run must
    equal this run's (pooled simulated metrics, blank-frame counts, M13
    metrics), else the run stops.
    """
    rows = read_baseline_csv(path)
    keys = ("n_reference", "n_test", "n_matched")

    def pooled_row(r, method, thr):
        for row in rows:
            if (row["section"] == "simulated" and row["image"] == "all"
                    and row["method"] == method and row["threshold"] == thr
                    and _csv_number(row["ratio"]) == r):
                return row
        return None

    for r in args.ratios:
        for thr in THRESHOLDS:
            old = pooled_row(r, "input", thr)
            new = results.get((r, "input", thr))
            if old is None or new is None or any(int(_csv_number(old[k])) != new[k]
                                                 for k in keys):
                raise SystemExit(f"--reuse-baselines {path}: its noisy-input rows differ from "
                                 f"this run's at r={r:g} ({thr}); the inputs are not the same.")
            for method in methods_reused:
                row = pooled_row(r, method, thr)
                if row is None:
                    raise SystemExit(f"--reuse-baselines {path}: no {method} row at r={r:g}.")
                s = summary_from_row(row)
                results[(r, method, thr)] = s
    if blank:
        counts = {}
        for row in rows:
            if row["section"] != "blank":
                continue
            c = counts.setdefault((_csv_number(row["ratio"]), row["method"]),
                                  dict(self=0, reference=0, input=0, frames=0, pixels=0))
            c[row["threshold"]] += int(_csv_number(row["n_test"]))
            if row["threshold"] == "self":
                c["input"] += int(_csv_number(row["n_reference"]))
                c["frames"] += 1
                c["pixels"] += int(_csv_number(row["n_pixels"]) or 0)
        for r in args.ratios:
            old, new = counts.get((r, "input")), blank.get((r, "input"))
            if old is None or (old["self"], old["reference"]) != (new["self"],
                                                                  new["reference"]):
                raise SystemExit(f"--reuse-baselines {path}: its blank-frame input counts "
                                 f"differ from this run's at r={r:g}.")
            for method in methods_reused:
                blank[(r, method)] = counts[(r, method)]
    if realnoise and args.realnoise_rows:
        log("--realnoise-rows: the M13 rows of the earlier run (whole frames) are not reused")
    elif realnoise:
        ref_noise = next(iter(realnoise.values()))["reference_noise"]
        for row in rows:
            if row["section"] != "realnoise":
                continue
            s = summary_from_row(row)
            if row["method"] == "input":
                new = realnoise[("input", row["threshold"])]
                if any(s[k] != new[k] for k in keys):
                    raise SystemExit(f"--reuse-baselines {path}: its M13 input rows differ.")
            elif row["method"] in methods_reused:
                realnoise[(row["method"], row["threshold"])] = dict(s, reference_noise=ref_noise)
    log(f"reused {', '.join(methods_reused)} from {path} (identical noisy inputs checked)")


# --------------------------------------------------------------------------- targets
def evaluate_targets(args, results, blank, realnoise, classical_run, label):
    lines = []
    if label is None:
        return ["(no target model: pass --target-model LABEL or a model labelled 'default')"]

    def res(r, method):
        return results.get((r, method, "reference"))

    def line(ok, text):
        status = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"{status}  {text}")

    for r, goal in ((2.0, 0.96), (5.0, 0.93)):
        s = res(r, label)
        if s is None:
            line(None, f"TPR >= {goal} at r={r:g}: ratio not run")
        else:
            line(s["tpr"] >= goal, f"TPR >= {goal} at r={r:g}: {label} TPR = {s['tpr']:.3f}")
    missing = [c for c in CLASSICAL if c not in classical_run]
    note = f" (not run: {', '.join(missing)})" if missing else ""
    for thr in THRESHOLDS:
        for r in args.ratios:
            s = results.get((r, label, thr))
            base = {c: results[(r, c, thr)]["f_measure"] for c in classical_run
                    if (r, c, thr) in results}
            if not base:
                line(None, f"F above every classical baseline at r={r:g} ({thr}): no baseline")
                continue
            best = max(base, key=base.get)
            line(s["f_measure"] > base[best],
                 f"F above every classical baseline at r={r:g} ({thr}): {label} F = "
                 f"{s['f_measure']:.3f}, best baseline {best} F = {base[best]:.3f}{note}")
    for thr in THRESHOLDS:
        for r in args.ratios:
            s, inp = results[(r, label, thr)], results[(r, "input", thr)]
            line(s["rfe_mean"] <= inp["rfe_mean"],
                 f"mean RFE <= input at r={r:g} ({thr}): {label} {s['rfe_mean']:.2f} %, "
                 f"input {inp['rfe_mean']:.2f} %")
    for r in (2.0, 5.0):
        fs, fi = results.get(("forced", r, label)), results.get(("forced", r, "input"))
        if fs is None or fi is None or "bias_faint" not in fs:
            line(None, f"forced photometry at r={r:g}: not run")
            continue
        for t in THIRDS:
            b, bi = fs[f"bias_{t}"], fi[f"bias_{t}"]
            sc, sci = fs[f"scatter_{t}"], fi[f"scatter_{t}"]
            # "within 1 pp of the input's": a bias closer to zero than the input's is no
            # failure (the input's own bias is the selection bias of the truth's catalogue)
            line(abs(b) <= abs(bi) + 1.0 and sc < sci,
                 f"forced photometry r={r:g} {t} third: |bias| {b:+.2f} % <= |input's| "
                 f"{bi:+.2f} % + 1 pp, scatter {sc:.2f} % < input {sci:.2f} %")
        line(abs(fs.get("bias_snr100", math.nan)) < 0.5,
             f"bright sources (SNR > 100) at r={r:g}: |median bias| "
             f"{fs.get('bias_snr100', math.nan):+.2f} % < 0.5 % ({fs.get('n_snr100', 0)} "
             "sources)")
    if blank:
        for r in args.ratios:
            c, ci = blank.get((r, label)), blank.get((r, "input"))
            line(c["self"] <= ci["self"] and c["reference"] <= ci["reference"],
                 f"blank frames, r={r:g}: detections at the output's own 7 sigma {c['self']} <= "
                 f"input {ci['self']}; at the input's level {c['reference']} <= input "
                 f"{ci['reference']}")
    else:
        line(None, "blank-frame detections: check not run")
    if realnoise and ("bm3d", "self") in realnoise:
        for thr in THRESHOLDS:
            s, b = realnoise[(label, thr)], realnoise[("bm3d", thr)]
            spur, spur_b = s["n_test"] - s["n_matched"], b["n_test"] - b["n_matched"]
            line(spur <= spur_b, f"M13 real noise ({thr}): spurious sources (unmatched "
                                 f"detections) {spur} <= BM3D {spur_b}")
    else:
        line(None, "M13 spurious sources against BM3D: not run")
    return lines


# --------------------------------------------------------------------------- output
def fmt(x, spec):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "--"
    return format(x, spec)


def rfe_text(s):
    if not np.isfinite(s.get("rfe_mean", math.nan)):
        return "--"
    err = s.get("rfe_err", math.nan)
    return f"{s['rfe_mean']:.2f} ± {err:.2f}" if np.isfinite(err) else f"{s['rfe_mean']:.2f}"


def list_table(title, header, rows, widths=None):
    out = [f".. list-table:: {title}", "   :header-rows: 1"]
    if widths:
        out.append("   :widths: " + " ".join(str(w) for w in widths))
    out.append("")
    for r in [header] + rows:
        out.append("   * - " + str(r[0]))
        for c in r[1:]:
            out.append("     - " + str(c))
    out.append("")
    return out


METRIC_HEADER = ["r", "method", "TPR", "precision", "F", "RFE (%)", "SNR gain", "PSNR (dB)",
                 "SSIM", "KL", "seconds"]


def metric_cells(s):
    return [fmt(s.get("tpr"), ".3f"), fmt(s.get("precision"), ".3f"),
            fmt(s.get("f_measure"), ".3f"), rfe_text(s), fmt(s.get("snr_gain"), ".2f"),
            fmt(s.get("psnr"), ".2f"), fmt(s.get("ssim"), ".5f"), fmt(s.get("kl"), ".4f"),
            fmt(s.get("seconds"), ".2f")]


def write_outputs(args, prefix, header_lines, methods, models, results, blank, realnoise,
                  coverage, targets, csv_rows, elapsed):
    rst_path = Path(str(prefix) + ".rst")
    csv_path = Path(str(prefix) + ".csv")
    rst_path.parent.mkdir(parents=True, exist_ok=True)

    write_csv(csv_path, header_lines, CSV_FIELDS, csv_rows)

    title = "Denoising quality benchmark"
    lines = [title, "=" * len(title), ""]
    lines += ["::", ""] + [f"    {h}" for h in header_lines] + [""]
    lines += [
        "Protocol: the module docstring of ``benchmarks/quality.py`` (the paper's, Vojtekova "
        "et al. 2021, Sect. 4). Ground truth: the real images "
        + ", ".join(f"``{Path(p).name}``" for p in args.images)
        + " (split ``test``, kept out of training"
        + ("; cleaned of cosmic rays with ``clean_cosmic_rays``: "
           + ", ".join(f"``{Path(p).name}``" for p in args.clean_cosmics)
           if args.clean_cosmics else "")
        + "); input: ``simulate_short_exposure`` at "
        "each ratio with fixed seeds; detection 7 sigma, 10 px, aperture diameter 10 px. "
        "Sources of all images pooled per ratio; RFE: mean ± standard error (per cent); "
        "seconds: mean wall time per image of one call (CPU unless stated in the header). "
        "Rows starting with 'paper:' are the values of the paper's Table 2 (their test set, "
        "not these images), for comparison only.",
        "",
        f"Classical baselines (parameters fixed, not tuned on these images): Gaussian sigma "
        f"{args.gaussian_sigma:g} px; median {args.median_size}x{args.median_size}; wavelet "
        "BayesShrink (scikit-image, soft, db1, sigma from the image) on the image (wavelet) "
        "and in the generalised-Anscombe space (wavelet_vst); BM3D (``bm3d`` package, "
        + ("generalised Anscombe space, sigma_psd from a robust estimate on the transformed "
           "image, exact-unbiased inverse" if args.bm3d_space == "anscombe" else
           "linear space, sigma_psd from a robust estimate")
        + "). Flux errors: background rms only for every image (SExtractor GAIN = 0).",
        "",
    ]
    if models:
        lines.append("Models:")
        lines.append("")
        for m in models:
            c = m["config"]
            lines.append(f"* ``{m['label']}``: ``{m['spec']}`` (name {m['name']}, sha256 "
                         f"``{m['sha256'][:16]}...``, {c.base_channels}-base depth {c.depth}, "
                         f"cond {list(c.cond_names)}, out_channels {c.out_channels})")
        lines.append("")
    for thr in THRESHOLDS:
        sub = THRESHOLD_TITLE[thr]
        lines += [sub, "-" * len(sub), ""]
        rows = []
        for r in args.ratios:
            for method in methods:
                s = results.get((r, method, thr))
                if s is not None:
                    rows.append([f"{r:g}", method] + metric_cells(s))
            if thr == "self":
                for p in PAPER_ROWS:
                    if p["ratio"] == r:
                        rows.append([f"{r:g}", p["method"]] + metric_cells(p)[:-1] + ["--"])
        lines += list_table(f"Simulated short exposures, threshold '{thr}'", METRIC_HEADER, rows)
    if any(k[0] == "forced" for k in results if isinstance(k[0], str)):
        sub = "Forced aperture photometry at the ground truth's sources"
        lines += [sub, "-" * len(sub), ""]
        lines.append(
            "Aperture sums (diameter 10 px, the same Background2D as the comparison) of each "
            "output at the positions of the ground truth's detections (threshold (b)), against "
            "the truth's: median of (F_out - F_true) / F_true (bias) and 1.4826 MAD (scatter), "
            "per cent, by thirds of the true flux; the last column is the median bias of the "
            "sources with a true SNR above 100.")
        lines.append("")
        rows = []
        for r in args.ratios:
            for method in methods:
                fs = results.get(("forced", r, method))
                if fs is None:
                    continue
                rows.append([f"{r:g}", method]
                            + [" / ".join(fmt(fs.get(f"{q}_{t}"), "+.2f" if q == "bias"
                                              else ".2f") for t in THIRDS)
                               for q in ("bias", "scatter")]
                            + [fmt(fs.get("bias_snr100"), "+.2f"), str(fs.get("n_forced", 0))])
        lines += list_table("Forced photometry bias and scatter (per cent)",
                            ["r", "method", "bias faint / mid / bright",
                             "scatter faint / mid / bright", "bias SNR > 100", "sources"],
                            rows)
    if blank:
        sub = "Hallucination check: detections on blank sky frames"
        lines += [sub, "-" * len(sub), ""]
        lines.append(
            f"{args.blank_frames} blank frame(s) of {args.blank_size}x{args.blank_size} px "
            "per evaluation image (its sky level, exposure time, read noise and dark current; "
            "``pure_sky_scene`` sky with a gradient), degraded at each ratio. Counts summed "
            "over the frames: 'own rms' = each image at 7 x its own background rms (paper); "
            "'input level' = at the noisy input's absolute 7-sigma level.")
        lines.append("")
        rows = []
        for r in args.ratios:
            for method in methods:
                c = blank.get((r, method))
                if c is not None:
                    rows.append([f"{r:g}", method, str(c["self"]), str(c["reference"]),
                                 str(c["frames"])])
        lines += list_table("Blank-frame detections",
                            ["r", "method", "own rms", "input level", "frames"], rows)
    if realnoise:
        sub = "Real-noise check: M13, five real 5 s frames"
        lines += [sub, "-" * len(sub), ""]
        any_s = next(iter(realnoise.values()))
        lines.append(
            f"Frame 1 as the input (denoised with r = {args.realnoise_ratio:g}), the mean of "
            "frames 2-5 (independent noise, 20 s in total) as the reference; no simulation. "
            "The SNR gain is relative to the raw frame 1. 'residual rms': rms of output - "
            "reference over all pixels (e-/s); the reference's own noise is "
            f"{any_s['reference_noise']:.4g} e-/s rms, a floor for it.")
        lines.append("")
        n_ref = any_s["n_reference"]
        if n_ref < 10:
            lines.append(
                f"Note: the reference has only {n_ref} detection(s) at 7 sigma / 10 px (these "
                "amateur 5 s frames are shallow: the cluster is a diffuse glow at this depth), "
                "so the detection metrics are undefined or meaningless here; PSNR, SSIM, KL "
                "and the residual rms compare the pixels.")
            lines.append("")
        for thr in THRESHOLDS:
            rows = []
            for method in methods:
                s = realnoise.get((method, thr))
                if s is not None:
                    rows.append([f"{args.realnoise_ratio:g}", method] + metric_cells(s)
                                + [fmt(s["residual_rms"], ".4g")])
            lines += list_table(f"M13 real noise, threshold '{thr}'",
                                METRIC_HEADER + ["residual rms"], rows)
    if coverage:
        sub = "Coverage of the model uncertainty"
        lines += [sub, "-" * len(sub), ""]
        lines.append(
            f"Fraction of pixels with \\|truth - output\\| <= sigma on {args.coverage_scenes} "
            f"noiseless synthetic WFC3/UVIS scene(s) of {args.coverage_size}x"
            f"{args.coverage_size} px (``render_scene``, t = 800 s); target 0.68 ± 0.05.")
        lines.append("")
        rows = [[lab, f"{r:g}", v["kind"], f"{v['coverage']:.3f}",
                 f"{v['coverage_sources']:.3f}", str(v["n_pixels"])]
                for (lab, r), v in sorted(coverage.items())]
        lines += list_table("Uncertainty coverage",
                            ["model", "r", "DNUNCERT", "coverage (all)",
                             "coverage (source pixels)", "pixels"], rows)
    sub = "Targets"
    lines += [sub, "-" * len(sub), "", "::", ""] + [f"    {t}" for t in targets] + [""]
    lines.append(f"Run time: {elapsed / 60:.1f} min.")
    lines.append("")
    rst_path.write_text("\n".join(lines))
    return rst_path, csv_path


def git_state():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=HERE.parent,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    import torch

    dev = "CPU"
    if torch.cuda.is_available():
        dev = f"CUDA {torch.cuda.get_device_name(0)}"
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"torch {torch.__version__} (threads {torch.get_num_threads()}), GPU: {dev}")


# --------------------------------------------------------------------------- main
def write_tiny_model(path, out_channels):
    """A tiny random network for development (its numbers are NOT results)."""
    import torch
    from astro_unet.model import AstroUNet, save_model

    torch.manual_seed(0)
    net = AstroUNet(base_channels=4, depth=3, residual=True, out_channels=out_channels,
                    cond_names=("ratio", "log_noise"))
    sha = save_model(net, path, normalization={"unit": "electron", "transform": "asinh",
                                               "scale": "noise", "noise_factor": 3.0},
                     metadata={"name": "tiny-random", "description": "random weights, "
                               "development only: not a trained model"})
    print(f"wrote {path} (random weights, out_channels={out_channels}, sha256 {sha})")


def build_parser():
    p = argparse.ArgumentParser(
        description="Quality benchmark of denoise_ccd against classical denoisers "
                    "(the paper's protocol).")
    p.add_argument("--model", action="append", default=[], metavar="LABEL=NAME_OR_PATH",
                   help="a model to evaluate: registry name or model file, with a label for "
                        "the tables (repeatable), e.g. default=default, paper=/path/paper.pt")
    p.add_argument("--estimates", nargs="+", choices=("extended", "long", "mean"),
                   default=["long"],
                   help="denoise_ccd estimate(s) to evaluate for every model; with several, "
                        "labels get -extended / -long / -mean (default: long)")
    p.add_argument("--target-model", default=None, metavar="LABEL",
                   help="label of the shipped default model the targets apply to "
                        "(default: the model labelled 'default', if any)")
    p.add_argument("--quick", action="store_true",
                   help="development mode: one image (F555W), r = 2 and 5, no BM3D")
    p.add_argument("--ratios", type=float, nargs="+", default=None,
                   help="exposure-time ratios (default 2 3 4 5; quick: 2 5)")
    p.add_argument("--images", nargs="+", default=None, metavar="TABLE_PATH",
                   help="evaluation images, as 'path' entries of the exposure table "
                        "(default: the three 'test' images; quick: the F555W crop)")
    p.add_argument("--clean-cosmics", nargs="*", default=None, metavar="TABLE_PATH",
                   help="evaluation images whose ground truth is cleaned of cosmic rays "
                        "first (astro_unet.clean_cosmic_rays, default settings). Default: "
                        "the WFPC2 field when evaluated (one 600 s exposure without "
                        "cosmic-ray rejection: most of its 7-sigma detections are cosmic "
                        "rays). Give the option with no value to use every truth as it is")
    p.add_argument("--data-dir", default=None,
                   help="directory of the real images (default: $ASTRO_UNET_DATA, else "
                        "../shared/data next to the repository)")
    p.add_argument("--table", default=None, help="exposure table (default: the package's)")
    p.add_argument("--methods", nargs="+", default=None, choices=ALL_METHODS,
                   help="baselines to run (default: all; quick: all but bm3d)")
    p.add_argument("--no-bm3d", action="store_true", help="skip BM3D")
    p.add_argument("--reuse-baselines", default=None, metavar="CSV",
                   help="take the classical methods not run here from this earlier run's "
                        "CSV (its noisy-input rows must equal this run's)")
    p.add_argument("--gaussian-sigma", type=float, default=1.0,
                   help="Gaussian sigma (px; default 1)")
    p.add_argument("--median-size", type=int, default=3, help="median box side (px; default 3)")
    p.add_argument("--bm3d-space", choices=("anscombe", "linear"), default="anscombe",
                   help="BM3D in the generalised-Anscombe space (default) or on the image "
                        "directly")
    p.add_argument("--seed", type=int, default=20210504,
                   help="base seed of the simulations (default 20210504)")
    p.add_argument("--blank-frames", type=int, default=None,
                   help="blank frames per evaluation image (0: no hallucination check; "
                        "default 1)")
    p.add_argument("--blank-size", type=int, default=512,
                   help="side of a blank frame (px; default 512)")
    p.add_argument("--no-realnoise", action="store_true", help="skip the M13 check")
    p.add_argument("--realnoise-ratio", type=float, default=4.0,
                   help="ratio for the M13 real-noise check (default 4)")
    p.add_argument("--realnoise-rows", type=int, nargs=2, default=None,
                   metavar=("START", "STOP"),
                   help="M13 check on these rows only (default: all), e.g. 520 1040 for a "
                        "model trained on rows 0-520 of the M13 frames "
                        "(data.repeated_rows)")
    p.add_argument("--coverage-scenes", type=int, default=2,
                   help="synthetic scenes for the coverage of two-channel models "
                        "(default 2)")
    p.add_argument("--coverage-size", type=int, default=512,
                   help="side of a coverage scene (default 512)")
    p.add_argument("--device", default=None, help="denoise_ccd device (default: conf.device)")
    p.add_argument("--output", default=None, metavar="PREFIX",
                   help="output prefix (default benchmarks/results/quality, "
                        "quality_quick with --quick): PREFIX.rst and PREFIX.csv")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep the classical baselines' outputs (and their measured times) in "
                        "DIR and reuse them when the same input comes again (e.g. a rerun "
                        "with other models: saves the BM3D time)")
    p.add_argument("--save-fits", default=None, metavar="DIR",
                   help="also write every input/output image as FITS into DIR (for figures)")
    p.add_argument("--write-tiny-model", default=None, metavar="PATH",
                   help="write a tiny RANDOM model for development and exit")
    p.add_argument("--tiny-out-channels", type=int, choices=(1, 2), default=1,
                   help="out_channels of --write-tiny-model (default 1)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.write_tiny_model:
        write_tiny_model(args.write_tiny_model, args.tiny_out_channels)
        return 0
    start = time.perf_counter()
    if args.ratios is None:
        args.ratios = [2.0, 5.0] if args.quick else [2.0, 3.0, 4.0, 5.0]
    args.ratios = [float(r) for r in args.ratios]
    if any(not r > 1 for r in args.ratios):
        raise SystemExit("ratios must be > 1.")
    if args.images is None:
        args.images = list(QUICK_IMAGES if args.quick else TEST_IMAGES)
    if args.blank_frames is None:
        args.blank_frames = 1
    methods = list(args.methods) if args.methods else [
        m for m in ALL_METHODS if not (args.quick and m == "bm3d")]
    if args.no_bm3d and "bm3d" in methods:
        methods.remove("bm3d")
    if "input" not in methods:
        methods.insert(0, "input")
    models = expand_estimates(parse_models(args.model), args.estimates)
    labels = [m["label"] for m in models]
    target = args.target_model
    if target is None and "default" in labels:
        target = "default"
    if target is not None and target not in labels:
        raise SystemExit(f"--target-model {target!r} is not one of the --model labels {labels}.")
    prefix = args.output or str(HERE / "results" / ("quality_quick" if args.quick
                                                    else "quality"))
    data_dir, table = evaluation_setup(args)
    save_dir = None
    if args.save_fits:
        save_dir = Path(args.save_fits)
        save_dir.mkdir(parents=True, exist_ok=True)

    describe_models(models)
    for m in models:
        log(f"model {m['label']}: {m['spec']} -> {m['name']} sha256 {m['sha256'][:16]}, "
            f"{m['config']}, loaded in {m['load_seconds']:.1f} s")
        warm_up(m["spec"], args.device)
    methods = methods + labels

    header = run_header(__file__, argv, args) + [
        f"methods: {', '.join(methods)}" + (" (quick mode)" if args.quick else ""),
    ]
    if args.cache:
        header.append(f"classical baselines cached in {args.cache} (a cached output keeps "
                      "the time measured when it was computed)")
    for m in models:
        header.append(f"model {m['label']}: {m['spec']} estimate={m['estimate']!r} sha256 "
                      f"{m['sha256']}")
    if any(m["random"] for m in models):
        header.append("WARNING: a model with random weights (development only): its numbers "
                      "are not results")
    for h in header:
        log(h)

    csv_rows = []
    log("simulated short exposures")
    results = simulated_section(args, table, data_dir, methods, models, csv_rows, save_dir)
    blank = {}
    if args.blank_frames > 0:
        log("hallucination check (blank frames)")
        blank = blank_section(args, table, data_dir, methods, models, csv_rows)
    realnoise = {}
    if not args.no_realnoise:
        realnoise = realnoise_section(args, table, data_dir, methods, models, csv_rows,
                                      save_dir)
    coverage = {}
    if args.coverage_scenes > 0 and models:
        log("uncertainty coverage")
        coverage = coverage_section(args, models, csv_rows)
    if args.reuse_baselines:
        reused = [c for c in CLASSICAL if c not in methods]
        reuse_baselines(args.reuse_baselines, reused, args, results, blank, realnoise)
        methods = methods[:1] + reused + methods[1:]
        header.append(f"reused from {args.reuse_baselines} (identical noisy inputs checked): "
                      f"{', '.join(reused)}")
    classical_run = [c for c in CLASSICAL if c in methods]
    targets = evaluate_targets(args, results, blank, realnoise, classical_run, target)
    elapsed = time.perf_counter() - start
    rst, csv_path = write_outputs(args, prefix, header, methods, models, results, blank,
                                  realnoise, coverage, targets, csv_rows, elapsed)
    print()
    for t in targets:
        print(t)
    print(f"\nwrote {rst} and {csv_path} ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
