# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Sensitivity of the paper's evaluation to a misaligned target.

Vojtekova et al. (2021, Sect. 4.4.1) trained on real short/long exposure
pairs and found the misalignment between input and target to be the limit.
This benchmark measures, at evaluation time, what a misaligned ground truth
does to the paper's metrics for the shipped default model, the noisy input
and a Gaussian filter.

* **Images, input, seeds** as in ``benchmarks/quality.py`` (imported from
  there): the three ``test`` images (the WFPC2 truth cleaned of cosmic rays,
  ``CLEAN_COSMICS_DEFAULT``), ``simulate_short_exposure`` with the table's
  read noise, the detector's dark current and the table's sky, seed
  ``seed + 100 i + round(10 r)``: the same noisy inputs as quality.py, at
  r = 2 and 5 (``--ratios``).
* **Methods**: the noisy input; a Gaussian filter (sigma 1 px,
  ``_baselines.gaussian``); ``denoise_ccd(short, ratio=r, model=...,
  read_noise=<table>)`` with the model's default estimate unless
  ``--estimate`` is given.  Each is run once per (image, r); every shift
  reuses that output (``--cache DIR`` also keeps the network outputs on disk).
* **Shifts**: images are resampled with ``scipy.ndimage.shift`` (cubic
  spline, ``order=3``, ``mode="nearest"``; masked pixels filled with the
  nearest good value first) by s = 0.25, 0.5, 1, 2 px along x and along the
  diagonal (s/sqrt2, s/sqrt2).  ``S_v`` is a shift by the vector v.
* **Three comparisons per shift** (reference = the truth ``T``, test = the
  method's output ``O``):

  - *target*: ``(S_s T, O)``, the truth shifted by s, the output as it is
    (what was asked: a target off by s);
  - *offset*: ``(S_{s/2} T, S_{-s/2} O)``, the same relative offset s split
    between the two images;
  - *aligned*: ``(S_{s/2} T, S_{s/2} O)``, the offset row's resampling
    without the offset.

  Why three: spline resampling by a fraction of a pixel low-passes the
  image.  The truth's own noise drops (its background rms by 3 % at 0.25 px
  along x to 10-11 % at 0.5 and 2 px diagonal, the ``truth rms`` column;
  integer shifts along x leave it alone), and with it its 7-sigma
  threshold: under 'self' its catalogue gains faint sources, under
  'reference' every test image is thresholded lower.  In the *target* rows
  this is mixed with the offset, and no aligned control exists for them
  that leaves the output unresampled.  In *offset* and *aligned* the
  reference is the same image and both tests are resampled by the same
  fraction of a pixel (a spline shift by -d and +d smooths alike), so
  ``offset - aligned`` is the effect of the offset alone, and
  ``aligned - (s = 0)`` the effect of the resampling alone.  At s = 0 the
  three are one comparison of the unresampled images (a shift by 0 is the
  identity; so are integer shifts along x, up to the edge).
* **Evaluated pixels**: the same for every row of an image: a frame of
  ``ceil(max s) + 2`` px on all four sides (pixels that a shift invalidates
  or that the spline fills from the edge) and every pixel that a shifted
  bad pixel of the truth touches (linear footprint, grown by 1 px), plus the
  input's mask.  The s = 0 rows therefore differ slightly from
  quality.py's (which evaluates the whole frame).
* **Metrics**: quality.py's ``compare`` (`astro_unet.photometric_comparison`
  with 7 sigma, 10 px minimum area, aperture radius 5 px, ``match="pixel"``
  with the default ``match_radius`` of 2 px), both thresholds ('self': each
  image at 7 x its own rms; 'reference': at the truth's absolute 7-sigma
  level), pooled over the images as quality.py's ``pooled`` does (TPR,
  precision, F, RFE = mean |F_test - F_ref| / F_ref of the matched sources,
  per cent, with its standard error; PSNR = mean over images).  No
  ``input=`` is passed (the SNR gain is not measured here).  ``sep`` is the
  median separation of the matched pairs (px).
* **Matching radius.**  Sources are matched within 2 px, and each image is
  measured at its own centroids, so a shift moves the pairs' separation to
  about s: at s = 2 px about half of the pairs fall outside the radius and
  are lost (TPR and precision drop, F with them); RFE is averaged over the
  pairs that are still matched.

Speed: detection of an image that comes back (the resampled truth of a
shift, an unshifted output under the 'self' threshold) is memoised by
content (a small LRU around ``astro_unet.photometry._detect_and_measure``,
a pure function); ``--no-memo`` switches that off to check that the numbers
do not change.

Usage::

    python benchmarks/misalignment.py --data-dir /work/shared/data --jobs 2

(8.3 min on the 2-core CPU; 13 min of CPU time in all.)

Outputs: ``benchmarks/results/misalignment.csv`` (every image and the pooled
rows) and ``benchmarks/results/misalignment.rst``, both starting with the
command, date, git state and machine.
"""

import argparse
import contextlib
import hashlib
import inspect
import math
import os
import resource
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import astropy.units as u
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _baselines  # noqa: E402
import quality as _quality  # noqa: E402

from astro_unet import denoise_ccd, simulate_short_exposure  # noqa: E402
from astro_unet.training.data import read_exposure_table  # noqa: E402

SHIFTS = (0.0, 0.25, 0.5, 1.0, 2.0)
#: unit vectors (dx, dy) of the shift directions
DIRECTIONS = {"x": (1.0, 0.0), "diagonal": (math.sqrt(0.5), math.sqrt(0.5))}
SPLINE = dict(order=3, mode="nearest")
#: target: truth shifted by s, output as it is; offset: truth +s/2, output -s/2;
#: aligned: truth +s/2, output +s/2 (the offset row's resampling without the offset)
SECTIONS = ("target", "offset", "aligned")
#: Bump when the way outputs are made changes, to invalidate ``--cache`` entries.
CACHE_VERSION = 1
CSV_FIELDS = (
    "section", "threshold", "image", "ratio", "method", "shift", "direction", "dx", "dy",
    "n_reference", "n_test", "n_matched", "tpr", "precision", "f_measure", "rfe_mean",
    "rfe_err", "rfe_median", "sep_median", "psnr", "ssim", "truth_rms_ratio", "d_f_pct",
    "d_rfe_pct", "n_pixels", "seed", "note",
)
log = _quality.log
fmt = _quality.fmt


# --------------------------------------------------------------------------- pieces
def shift_vectors(shifts):
    """[(shift, direction, dx, dy)]: s = 0 once, then every s > 0 along each direction."""
    out = []
    if 0.0 in shifts:
        out.append((0.0, "none", 0.0, 0.0))
    for name, (ux, uy) in DIRECTIONS.items():
        for s in shifts:
            if s > 0:
                out.append((s, name, s * ux, s * uy))
    return out


def shift_image(data, dx, dy):
    """``data`` moved by (dx, dy) px: cubic spline, edges from the nearest pixel."""
    if dx == 0 and dy == 0:
        return np.array(data, dtype=np.float64, copy=True)
    return ndimage.shift(np.asarray(data, dtype=np.float64), (dy, dx), **SPLINE)


def shifted_footprint(mask, dx, dy):
    """Pixels of the shifted image that a masked pixel touches (linear footprint + 1 px)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    moved = ndimage.shift(mask.astype(np.float64), (dy, dx), order=1, mode="constant",
                          cval=0.0) > 0
    return ndimage.binary_dilation(moved | mask, iterations=1)


def evaluation_mask(shape, truth_mask, input_mask, vectors):
    """Pixels left out of every comparison of an image (the same for every shift)."""
    border = int(math.ceil(max([abs(v) for _, _, dx, dy in vectors for v in (dx, dy)]
                               + [0.0]))) + 2
    mask = np.zeros(shape, dtype=bool)
    mask[:border, :] = mask[-border:, :] = True
    mask[:, :border] = mask[:, -border:] = True
    if truth_mask is not None:
        for _, _, dx, dy in vectors:
            mask |= shifted_footprint(truth_mask, dx, dy)
    if input_mask is not None:
        mask |= np.asarray(input_mask, dtype=bool)
    return mask, border


@contextlib.contextmanager
def memoised_detection(enabled=True, maxsize=16):
    """
    Memoise ``astro_unet.photometry._detect_and_measure`` by content.

    Only the calls without a threshold map, uncertainty or Poisson term (the
    reference detection and the 'self' test detection of
    `photometric_comparison`, as called here) are cached; the function is
    pure, so the results are the same (``--no-memo`` checks it).
    """
    from astro_unet import photometry

    stats = dict(hits=0, misses=0)
    if not enabled:
        yield stats
        return
    original = photometry._detect_and_measure
    cache = OrderedDict()

    def cached(data, *, bad=None, uncertainty=None, poisson_scale=None, threshold_image=None,
               **settings):
        if threshold_image is not None or uncertainty is not None or poisson_scale is not None:
            return original(data, bad=bad, uncertainty=uncertainty,
                            poisson_scale=poisson_scale, threshold_image=threshold_image,
                            **settings)
        arr = np.ascontiguousarray(np.asarray(data, dtype=np.float64))
        h = hashlib.sha1(arr.tobytes())
        h.update(repr(arr.shape).encode())
        if bad is not None:
            h.update(np.ascontiguousarray(np.asarray(bad, dtype=bool)).tobytes())
        h.update(repr(sorted(settings.items())).encode())
        key = h.hexdigest()
        if key in cache:
            cache.move_to_end(key)
            stats["hits"] += 1
            return cache[key]
        stats["misses"] += 1
        result = original(data, bad=bad, threshold_image=None, **settings)
        cache[key] = result
        while len(cache) > maxsize:
            cache.popitem(last=False)
        return result

    photometry._detect_and_measure = cached
    try:
        yield stats
    finally:
        photometry._detect_and_measure = original


def run_model(short, *, ratio, read_noise, model, args):
    """(denoised electron/s array, seconds), from ``--cache`` when the same call came before."""
    cache_file = None
    if args.cache:
        key = (float(ratio), float(read_noise), model["sha256"], args.estimate,
               float(short.meta["EXPTIME"]), CACHE_VERSION)
        cache_file = Path(args.cache) / f"denoised_{_quality.input_digest(short, key)}.npz"

    def compute():
        kwargs = {} if args.estimate is None else dict(estimate=args.estimate)
        t0 = time.perf_counter()
        out = denoise_ccd(short, ratio=ratio, model=model["spec"], device=args.device,
                          read_noise=read_noise, **kwargs)
        seconds = time.perf_counter() - t0
        if u.Unit(out.unit) != u.electron / u.s:
            raise RuntimeError(f"denoise_ccd returned {out.unit}, expected electron/s.")
        return np.asarray(out.data, dtype=np.float64), seconds

    return _quality.npz_cached(cache_file, compute)


def median_separation(records):
    seps = []
    for r in records:
        tab = r["table"]
        m = np.asarray(tab["matched"], dtype=bool)
        seps.append(np.asarray(tab["separation"], dtype=float)[m])
    seps = np.concatenate(seps) if seps else np.zeros(0)
    return float(np.median(seps)) if seps.size else math.nan


def csv_row(section, thr, image, r, method, vec, s, **extra):
    shift, direction, dx, dy = vec
    row = {k: "" for k in CSV_FIELDS}
    row.update(section=section, threshold=thr, image=image, ratio=r, method=method,
               shift=shift, direction=direction, dx=dx, dy=dy)
    for k in ("n_reference", "n_test", "n_matched", "tpr", "precision", "f_measure",
              "rfe_mean", "rfe_err", "rfe_median", "psnr", "ssim"):
        if k in s:
            row[k] = s[k]
    row.update(extra)
    return row


# --------------------------------------------------------------------------- measurement
def measure_one(args, model, data_dir, i, path, r):
    """
    Every comparison of one (image, ratio).

    Returns ``(entries, csv_rows, memo_stats)``; ``entries`` is a list of
    ``((section, thr, r, method, shift, direction), record)``.
    """
    table = read_exposure_table(args.table)
    vectors = shift_vectors(args.shifts)
    row = _quality.table_row(table, path)
    truth, t = _quality.load_rate(row, data_dir, clean_cosmics=path in args.clean_cosmics)
    ron = float(row["read_noise"])
    dark = _quality.dark_current_for(path)
    sky = _quality.sky_argument(row)
    stem = Path(path).name.replace(".fits", "")
    truth_mask = None if truth.mask is None else np.asarray(truth.mask, dtype=bool)
    filled_truth = _baselines.fill_bad(truth.data, truth_mask)
    seed = args.seed + 100 * i + int(round(10 * r))
    short = simulate_short_exposure(truth, r, exposure_time=t, read_noise=ron,
                                    dark_current=dark, sky=sky, seed=seed)
    in_mask = None if short.mask is None else np.asarray(short.mask, dtype=bool)
    data = np.asarray(short.data, dtype=np.float64)
    outputs, seconds = OrderedDict(), {}
    outputs["input"], seconds["input"] = data.copy(), 0.0
    t0 = time.perf_counter()
    outputs["gaussian"] = _baselines.gaussian(data, in_mask, sigma=args.gaussian_sigma)
    seconds["gaussian"] = time.perf_counter() - t0
    outputs[model["label"]], seconds[model["label"]] = run_model(
        short, ratio=r, read_noise=ron, model=model, args=args)
    mask, border = evaluation_mask(truth.shape, truth_mask, in_mask, vectors)
    n_pix = int((~mask).sum())
    filled = {m: _baselines.fill_bad(o, in_mask) for m, o in outputs.items()}
    log(f"{stem} r={r:g} (seed {seed}): {truth.shape}, t = {t:.6g} s, RON {ron:.4g} e-, "
        f"dark {dark:.3g} e-/s, sky arg {sky}; {model['label']} {seconds[model['label']]:.1f} "
        f"s; {n_pix} px evaluated (frame {border} px)")

    truth_cache = {}

    def truth_at(dx, dy):
        if (dx, dy) not in truth_cache:
            truth_cache[(dx, dy)] = _quality.eval_ccd(shift_image(filled_truth, dx, dy), mask)
        return truth_cache[(dx, dy)]

    entries, rows = [], []
    rms0 = {}
    with memoised_detection(not args.no_memo) as memo:
        for vec in vectors:
            s_px, direction, dx, dy = vec
            # (reference, test) of each section; s = 0: one comparison for all three
            pairs = {"target": ((dx, dy), (0.0, 0.0))}
            if s_px > 0:
                pairs["offset"] = ((dx / 2, dy / 2), (-dx / 2, -dy / 2))
                pairs["aligned"] = ((dx / 2, dy / 2), (dx / 2, dy / 2))
            msg = []
            for method in outputs:
                for section, (ref_shift, test_shift) in pairs.items():
                    ref = truth_at(*ref_shift)
                    if test_shift == (0.0, 0.0):
                        test = _quality.eval_ccd(outputs[method], mask)
                    else:
                        test = _quality.eval_ccd(shift_image(filled[method], *test_shift), mask)
                    for thr in _quality.THRESHOLDS:
                        tab, summ = _quality.compare(ref, test, None, thr)
                        rms = float(u.Quantity(summ["background_rms_ref"]).value)
                        rms0.setdefault(thr, rms)
                        rec = dict(table=tab, summary=summ, seconds=seconds[method],
                                   rms_ratio=rms / rms0[thr])
                        for sec in (SECTIONS if s_px == 0 else (section,)):
                            entries.append(((sec, thr, r, method, s_px, direction), rec))
                            rows.append(csv_row(
                                sec, thr, stem, r, method, vec, summ,
                                sep_median=median_separation([rec]),
                                truth_rms_ratio=rec["rms_ratio"], n_pixels=n_pix, seed=seed))
                        if thr == "reference":
                            msg.append(f"{method} {section} F {summ['f_measure']:.3f} "
                                       f"RFE {summ['rfe_mean']:.2f}")
            log(f"  {stem} r={r:g} s={s_px:g} {direction}: " + ", ".join(msg)
                + " (threshold b)")
    return entries, rows, memo


def measure(args, data_dir, model, csv_rows):
    """All (image, ratio) tasks, ``--jobs`` at a time; {key: records in image order}."""
    tasks = [(i, path, r) for i, path in enumerate(args.images) for r in args.ratios]
    slim = {k: model[k] for k in ("label", "spec", "sha256")}
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: a forked child of a process whose torch/OpenMP thread pool is
        # running (the warm-up) can hang
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool_:
            futures = [pool_.submit(measure_one, args, slim, data_dir, *task) for task in tasks]
            results = [f.result() for f in futures]
    else:
        results = [measure_one(args, slim, data_dir, *task) for task in tasks]
    per = {}
    hits = misses = 0
    for entries, rows, memo in results:
        for key, rec in entries:
            per.setdefault(key, []).append(rec)
        csv_rows.extend(rows)
        hits, misses = hits + memo["hits"], misses + memo["misses"]
    log(f"detections memoised: {hits} reused, {misses} computed")
    return per


def pool(per, csv_rows):
    results = {}
    for key, recs in per.items():
        section, thr, r, method, s_px, direction = key
        p = _quality.pooled(recs)
        p["sep_median"] = median_separation(recs)
        p["truth_rms_ratio"] = float(np.mean([rec["rms_ratio"] for rec in recs]))
        results[key] = p
        vec = (s_px, direction, "", "")
        csv_rows.append(csv_row(section, thr, "all", r, method, vec, p,
                                sep_median=p["sep_median"],
                                truth_rms_ratio=p["truth_rms_ratio"],
                                note=f"pooled over {len(recs)} image(s)"))
    return results


def offset_effect(args, results, methods, tol):
    """
    Per (threshold, r, method): what the offset alone does, ``offset`` minus
    ``aligned`` at the same shift (both images resampled by s/2), for F and
    RFE in per cent of the aligned value; the largest change of the aligned
    rows from s = 0 (``jitter``: the resampling alone); and the largest tested
    shift up to which every |change| <= ``tol`` in both directions.
    """
    rows = []
    positive = sorted(x for x in args.shifts if x > 0)
    for thr in _quality.THRESHOLDS:
        for r in args.ratios:
            for method in methods:
                base = results.get(("target", thr, r, method, 0.0, "none"))
                if base is None:
                    continue
                out = dict(threshold=thr, ratio=r, method=method, d_f={}, d_rfe={})
                jitter_f = jitter_rfe = 0.0
                ok_f = ok_both = 0.0
                stop_f = stop_both = False
                for s_px in positive:
                    worst_f = worst_rfe = 0.0
                    for direction in DIRECTIONS:
                        m = results[("offset", thr, r, method, s_px, direction)]
                        c = results[("aligned", thr, r, method, s_px, direction)]
                        df = (m["f_measure"] - c["f_measure"]) / c["f_measure"]
                        dr = (m["rfe_mean"] - c["rfe_mean"]) / c["rfe_mean"]
                        out["d_f"][(s_px, direction)] = 100 * df
                        out["d_rfe"][(s_px, direction)] = 100 * dr
                        worst_f, worst_rfe = max(worst_f, abs(df)), max(worst_rfe, abs(dr))
                        jitter_f = max(jitter_f, abs(c["f_measure"] / base["f_measure"] - 1))
                        jitter_rfe = max(jitter_rfe, abs(c["rfe_mean"] / base["rfe_mean"] - 1))
                    stop_f = stop_f or worst_f > tol
                    stop_both = stop_both or max(worst_f, worst_rfe) > tol
                    ok_f = ok_f if stop_f else s_px
                    ok_both = ok_both if stop_both else s_px
                out.update(jitter_f=100 * jitter_f, jitter_rfe=100 * jitter_rfe,
                           tolerance_f=ok_f, tolerance_both=ok_both)
                rows.append(out)
    return rows


def effect_tables(args, effect):
    """RST list-tables of ``offset_effect``."""
    positive = sorted(x for x in args.shifts if x > 0)
    tol = f"{100 * args.tolerance:g} %"
    lines = []
    for thr in _quality.THRESHOLDS:
        head = (["r", "method"] + [f"s = {s:g}" for s in positive]
                + ["aligned vs s = 0", f"F within {tol} up to",
                   f"F and RFE within {tol} up to"])
        rows = []
        for e in effect:
            if e["threshold"] != thr:
                continue
            cells = [" / ".join(f"{e['d_f'][(s, d)]:+.1f}, {e['d_rfe'][(s, d)]:+.1f}"
                                for d in DIRECTIONS) for s in positive]
            rows.append([f"{e['ratio']:g}", e["method"]] + cells
                        + [f"{e['jitter_f']:.1f}, {e['jitter_rfe']:.1f}",
                           f"{e['tolerance_f']:g} px", f"{e['tolerance_both']:g} px"])
        lines += _quality.list_table(f"Effect of the offset, threshold '{thr}'", head, rows)
    return lines


def write_outputs(args, prefix, header, methods, results, csv_rows, effect, elapsed, cpu):
    rst_path = Path(str(prefix) + ".rst")
    csv_path = Path(str(prefix) + ".csv")
    rst_path.parent.mkdir(parents=True, exist_ok=True)
    _quality.write_csv(csv_path, header, CSV_FIELDS, csv_rows)

    title = "Misalignment of the target: sensitivity of the evaluation"
    lines = [title, "=" * len(title), ""]
    lines += ["::", ""] + [f"    {h}" for h in header] + [""]
    lines += [
        "Protocol: the module docstring of ``benchmarks/misalignment.py``. Shifts by cubic "
        "spline along x or the diagonal. Three comparisons per shift s: 'target' = the "
        "output against the truth shifted by s (TPR, precision, F, RFE, sep, PSNR); "
        "'offset' = truth shifted by +s/2, output by -s/2 (the same offset s, both images "
        "resampled alike); 'aligned' = truth +s/2, output +s/2 (the offset row's resampling "
        "without the offset). Sources of the three images pooled; RFE: mean ± standard error "
        "(per cent) over the matched sources; sep: median separation of the matched pairs "
        "(px; match radius 2 px); truth rms: background rms of the truth shifted by s / "
        "unshifted (mean over images).",
        "",
    ]
    header_row = ["r", "method", "s (px)", "direction", "TPR", "precision", "F", "RFE (%)",
                  "sep (px)", "PSNR (dB)", "truth rms", "offset TPR", "offset F",
                  "offset RFE (%)", "aligned TPR", "aligned F", "aligned RFE (%)"]
    vectors = shift_vectors(args.shifts)
    for thr in _quality.THRESHOLDS:
        sub = _quality.THRESHOLD_TITLE[thr]
        lines += [sub, "-" * len(sub), ""]
        rows = []
        for r in args.ratios:
            for method in methods:
                for s_px, direction, _, _ in vectors:
                    t = results.get(("target", thr, r, method, s_px, direction))
                    o = results.get(("offset", thr, r, method, s_px, direction))
                    a = results.get(("aligned", thr, r, method, s_px, direction))
                    if t is None:
                        continue
                    rows.append([f"{r:g}", method, f"{s_px:g}",
                                 "--" if direction == "none" else direction,
                                 fmt(t["tpr"], ".3f"), fmt(t["precision"], ".3f"),
                                 fmt(t["f_measure"], ".3f"), _quality.rfe_text(t),
                                 fmt(t["sep_median"], ".2f"), fmt(t["psnr"], ".2f"),
                                 fmt(t["truth_rms_ratio"], ".3f"),
                                 fmt(o["tpr"], ".3f"), fmt(o["f_measure"], ".3f"),
                                 _quality.rfe_text(o), fmt(a["tpr"], ".3f"),
                                 fmt(a["f_measure"], ".3f"), _quality.rfe_text(a)])
        lines += _quality.list_table(f"Misaligned truth, threshold '{thr}'", header_row, rows)
    sub = "Effect of the offset alone (offset - aligned)"
    lines += [sub, "-" * len(sub), ""]
    lines.append(
        "Each cell: change of F, change of RFE from the aligned row to the offset row at the "
        "same shift (both images resampled by s/2), in per cent of the aligned value, along "
        "x / along the diagonal. 'aligned vs s = 0': the largest change of the aligned rows' "
        "F and RFE from s = 0 (per cent), what the resampling alone does. Last columns: the "
        "largest tested shift up to which every change is within "
        f"{100 * args.tolerance:g} % in both directions.")
    lines.append("")
    lines += effect_tables(args, effect)
    lines.append(f"Run time: {elapsed / 60:.1f} min wall, {cpu / 60:.1f} min CPU time "
                 f"(all processes); load average at the end {os.getloadavg()[0]:.2f}.")
    lines.append("")
    rst_path.write_text("\n".join(lines))
    return rst_path, csv_path


# --------------------------------------------------------------------------- main
def build_parser():
    p = argparse.ArgumentParser(
        description="F-measure and RFE of the default model, the noisy input and a Gaussian "
                    "filter against a truth shifted by a fraction of a pixel or more.")
    p.add_argument("--model", default="default", metavar="[LABEL=]NAME_OR_PATH",
                   help="the network: registry name or model file (default: default)")
    p.add_argument("--estimate", default=None, choices=("extended", "long", "mean"),
                   help="denoise_ccd estimate (default: denoise_ccd's default)")
    p.add_argument("--ratios", type=float, nargs="+", default=[2.0, 5.0],
                   help="exposure-time ratios (default 2 5)")
    p.add_argument("--shifts", type=float, nargs="+", default=list(SHIFTS),
                   help="shifts of the truth in px (default 0 0.25 0.5 1 2)")
    p.add_argument("--images", nargs="+", default=None, metavar="TABLE_PATH",
                   help="evaluation images (default: quality.py's three test images)")
    p.add_argument("--clean-cosmics", nargs="*", default=None, metavar="TABLE_PATH",
                   help="truths cleaned of cosmic rays first (default: as quality.py)")
    p.add_argument("--data-dir", default=None,
                   help="directory of the real images (default: $ASTRO_UNET_DATA, else "
                        "../shared/data next to the repository)")
    p.add_argument("--table", default=None, help="exposure table (default: the package's)")
    p.add_argument("--gaussian-sigma", type=float, default=1.0,
                   help="Gaussian sigma (px; default 1)")
    p.add_argument("--seed", type=int, default=20210504,
                   help="base seed of the simulations (default 20210504, as quality.py)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="relative change of F and RFE for the tolerance summary (default 0.01)")
    p.add_argument("--device", default=None, help="denoise_ccd device (default: conf.device)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep the network outputs in DIR and reuse them in a later run")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="(image, ratio) pairs measured in parallel processes (default: 2, "
                        "or 1 on a single CPU)")
    p.add_argument("--no-memo", action="store_true",
                   help="do not memoise detections (slower; the numbers must not change)")
    p.add_argument("--output", default=None, metavar="PREFIX",
                   help="output prefix (default benchmarks/results/misalignment)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    cpu_start = sum(x.ru_utime + x.ru_stime for x in
                    (resource.getrusage(resource.RUSAGE_SELF),
                     resource.getrusage(resource.RUSAGE_CHILDREN)))
    args.ratios = [float(r) for r in args.ratios]
    if any(not r > 1 for r in args.ratios):
        raise SystemExit("ratios must be > 1.")
    args.shifts = sorted(set(float(s) for s in args.shifts))
    if any(s < 0 for s in args.shifts) or 0.0 not in args.shifts:
        raise SystemExit("shifts must be >= 0 and include 0 (the aligned case).")
    if args.images is None:
        args.images = list(_quality.TEST_IMAGES)
    data_dir, _ = _quality.evaluation_setup(args)
    model = _quality.parse_models([args.model])[0]
    _quality.describe_models([model])
    estimate = args.estimate or inspect.signature(denoise_ccd).parameters["estimate"].default
    methods = ["input", "gaussian", model["label"]]
    prefix = args.output or str(HERE / "results" / "misalignment")

    header = _quality.run_header(__file__, argv, args) + [
        f"shifts (px): {', '.join(f'{s:g}' for s in args.shifts)} along "
        f"{' and '.join(DIRECTIONS)}; scipy.ndimage.shift order=3, mode='nearest'",
        f"methods: input, gaussian (sigma {args.gaussian_sigma:g} px), {model['label']}",
        f"model {model['label']}: {model['spec']} ({model['name']}) estimate={estimate!r} "
        f"sha256 {model['sha256']}",
    ]
    if model["random"]:
        header.append("WARNING: a model with random weights (development only): its numbers "
                      "are not results")
    for h in header:
        log(h)
    _quality.warm_up(model["spec"], args.device)

    csv_rows = []
    per = measure(args, data_dir, model, csv_rows)
    results = pool(per, csv_rows)
    effect = offset_effect(args, results, methods, args.tolerance)
    for e in effect:
        for (s_px, direction), d_f in e["d_f"].items():
            row = {k: "" for k in CSV_FIELDS}
            row.update(section="offset_effect", threshold=e["threshold"], image="all",
                       ratio=e["ratio"], method=e["method"], shift=s_px, direction=direction,
                       d_f_pct=d_f, d_rfe_pct=e["d_rfe"][(s_px, direction)],
                       note="offset - aligned, per cent of the aligned value")
            csv_rows.append(row)
    elapsed = time.perf_counter() - start
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                             resource.RUSAGE_CHILDREN)]
    cpu = sum(x.ru_utime + x.ru_stime for x in usage) - cpu_start
    rst, csv_path = write_outputs(args, prefix, header, methods, results, csv_rows, effect,
                                  elapsed, cpu)
    print()
    for e in effect:
        print(f"{e['threshold']:>9s} r={e['ratio']:g} {e['method']:>9s}: F within "
              f"{100 * args.tolerance:g} % up to {e['tolerance_f']:g} px, F and RFE up to "
              f"{e['tolerance_both']:g} px")
    print(f"\nwrote {rst} and {csv_path} ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
