# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Scaling of `astro_unet.denoise_files` and `astro_unet.denoise_large` (CPU).

Many files
    16 float32 star fields of 2048^2 (electron/s, the ones of
    ``benchmarks/speed.py``) written to FITS, then denoised

    * in a loop in one process: read (``astro-unet``'s reader),
      `denoise_ccd`, write (its writer) -- the baseline;
    * with `denoise_files` on a local Dask cluster of 1 worker process
      (all cores to torch) and of 2 worker processes (half the cores each);
    * on a cluster of 1 worker process with one torch thread (with the
      2-worker run on a 2-core machine: the scaling at equal threads per
      worker).

    Reported: wall time and throughput, the speed-up of 2 workers over 1,
    and the overhead per file of `denoise_files` over the loop, from the sum
    of the task times (which excludes the start of the cluster, reported
    apart).

Huge mosaic
    A 16384^2 float32 star field written to disk strip by strip (never whole
    in memory, 1 GiB), denoised with `denoise_large` in a child process,
    whose resident memory (RSS of its process tree, `psutil`, sampled every
    0.1 s) must stay under 4 GB.

The network is the registered default model if there is one, else the
default architecture (`astro_unet.model.DEFAULT_CONFIG`) with random
weights (the speed does not depend on the weights); the results say which.

Usage::

    python benchmarks/scale.py            # full: results/scale.txt (~15-20 min on 2 cores)
    python benchmarks/scale.py --quick    # 4 frames of 512^2, a 2048^2 mosaic
                                          # (results/scale_quick.txt)

Options: ``--frames N --size N --mosaic N --chunk N --workers 1 2 --skip-files
--skip-mosaic --model PATH --workdir DIR --results PATH``; ``--identity-network`` measures the
mosaic path with the network replaced by the identity (its memory and time
without the network; results/scale_identity.txt).  The machine load
(``os.getloadavg``) is recorded, because a shared machine makes timings vary.
"""

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
EXPTIME = 100.0
MEMORY_LIMIT_GB = 4.0


def star_field(n, seed=0):
    sys.path.insert(0, HERE)
    from speed import star_field as field

    return field(n, seed=seed)


def strip_field(ny, nx, seed):
    """A float32 strip of a star field (electron/s) for the mosaic."""
    import numpy as np

    rng = np.random.default_rng(seed)
    expected = np.full((ny, nx), 5.0 * EXPTIME, dtype=np.float32)
    half = 7
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    for _ in range(ny * nx // 8000):
        y, x = rng.integers(half, ny - half), rng.integers(half, nx - half)
        sigma = rng.uniform(1.0, 2.0)
        flux = 10 ** rng.uniform(2.5, 6.0)
        stamp = flux / (2 * np.pi * sigma ** 2) * np.exp(-(yy ** 2 + xx ** 2) / (2 * sigma ** 2))
        expected[y - half:y + half + 1, x - half:x + half + 1] += stamp.astype(np.float32)
    return (rng.poisson(expected) / EXPTIME).astype(np.float32)


def write_mosaic(path, n, strip=512):
    """Write an n x n float32 FITS image strip by strip (at most one strip in memory)."""
    import numpy as np
    from astropy.io import fits

    from astro_unet.large import _create_fits, _image_header

    header = _image_header(-32, (n, n), primary=True,
                           cards=fits.Header({"BUNIT": "electron/s", "EXPTIME": EXPTIME,
                                              "OBJECT": "synthetic mosaic"}).cards)
    (offset,) = _create_fits(path, [(header, (n, n), ">f4")])
    mm = np.memmap(path, dtype=">f4", mode="r+", offset=offset, shape=(n, n))
    for k, y in enumerate(range(0, n, strip)):
        rows = min(strip, n - y)
        mm[y:y + rows] = strip_field(rows, n, seed=1000 + k)
        mm.flush()
    del mm


def model_spec(args, workdir):
    """(model argument, description)."""
    if args.model:
        return args.model, f"model file {args.model}"
    from astro_unet import weights

    try:
        target = weights.default_target()
        return "default", f"registered default model {target!r}"
    except ValueError:
        pass
    import torch

    from astro_unet.denoise import DEFAULT_NORMALIZATION
    from astro_unet.model import DEFAULT_CONFIG, AstroUNet, save_model

    torch.manual_seed(0)
    path = os.path.join(workdir, "default_random.pt")
    save_model(AstroUNet(DEFAULT_CONFIG), path, normalization=DEFAULT_NORMALIZATION,
               metadata={"name": "default-architecture-random"})
    return path, f"DEFAULT_CONFIG = {DEFAULT_CONFIG} with random weights (no default model " \
                 f"is registered)"


# --------------------------------------------------------------------------
# many files


def loop_baseline(files, outdir, model):
    """Read, denoise_ccd, write each file in this process (as the CLI does)."""
    from astro_unet.fitsio import read_ccd, write_like
    from astro_unet.denoise import denoise_ccd

    os.makedirs(outdir, exist_ok=True)
    times, denoise_times = [], []
    start = time.perf_counter()
    for path in files:
        t0 = time.perf_counter()
        ccd, index = read_ccd(path)
        t1 = time.perf_counter()
        result = denoise_ccd(ccd, ratio=2, model=model, device="cpu")
        denoise_times.append(time.perf_counter() - t1)
        out = os.path.join(outdir, os.path.basename(path).replace(".fits", "_denoised.fits"))
        write_like(path, index, ccd, result, out, overwrite=True, unit_given=False)
        times.append(time.perf_counter() - t0)
    return {"wall": time.perf_counter() - start, "per_file": times,
            "denoise_only": denoise_times}


def files_run(files, outdir, model, workers, threads=None):
    """denoise_files on its own local cluster (``threads``: torch threads per worker)."""
    from astro_unet.files import _local_cluster, denoise_files

    t0 = time.perf_counter()
    if threads is None:
        table = denoise_files(files, outdir, ratio=2, model=model, workers=workers,
                              overwrite=True, device="cpu")
    else:
        from distributed import Client

        with _local_cluster(workers, threads=threads) as cluster, Client(cluster) as client:
            table = denoise_files(files, outdir, ratio=2, model=model, client=client,
                                  overwrite=True, device="cpu")
    wall = time.perf_counter() - t0
    bad = [s for s in table["status"] if s != "ok"]
    if bad:
        raise RuntimeError(f"denoise_files failed: {bad[:3]}")
    return {"wall": wall, "task_seconds": [float(s) for s in table["seconds"]],
            "run_wall": table.meta["wall_seconds"], "workers": sorted(set(table["worker"]))}


# --------------------------------------------------------------------------
# huge mosaic


def mosaic_child(spec):
    """In the child process: denoise_large, print a JSON line."""
    from astro_unet.large import denoise_large

    if spec.get("identity"):
        # the pipeline's own memory and time, without the network
        import astro_unet._inference

        astro_unet._inference.forward_batch = lambda net, x, cond_t: x.float()

    t0 = time.perf_counter()
    denoise_large(spec["input"], spec["output"], ratio=2, model=spec["model"], device="cpu",
                  chunk_size=spec["chunk"], workers=spec["block_workers"], overwrite=True)
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


def tree_rss(proc):
    import psutil

    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def tiles_computed(n, tile, overlap, multiple, chunk):
    """(tiles computed by the blocks of denoise_large, tiles of the whole-image plan)."""
    import numpy as np

    from astro_unet.large import _axis_chunks
    from astro_unet.tiling import plan_tiles

    plan = plan_tiles((n, n), tile_size=tile, overlap=overlap, size_multiple=multiple)
    sizes, _ = _axis_chunks(plan.padded_shape[0], plan.y_starts, plan.tile_shape[0], chunk)
    edges = np.concatenate([[0], np.cumsum(sizes)])
    starts = np.asarray(plan.y_starts)
    per_axis = sum(int(((starts < b) & (starts + plan.tile_shape[0] > a)).sum())
                   for a, b in zip(edges[:-1], edges[1:]))
    return per_axis ** 2, plan.n_tiles, len(sizes) ** 2


def mosaic_run(path, out, model, chunk, block_workers, identity=False):
    import psutil

    spec = json.dumps({"input": path, "output": out, "model": model, "chunk": chunk,
                       "block_workers": block_workers, "identity": identity})
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--_mosaic-child", spec],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = psutil.Process(child.pid)
    peak = 0
    samples = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(proc))
        samples += 1
        time.sleep(0.1)
    stdout, stderr = child.communicate()
    wall = time.perf_counter() - t0
    if child.returncode != 0:
        raise RuntimeError(f"mosaic child failed ({child.returncode}):\n{stderr[-3000:]}")
    result = json.loads([line for line in stdout.splitlines()
                         if line.startswith("RESULT ")][-1][7:])
    result.update(peak_rss=peak, wall=wall, samples=samples)
    return result


# --------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small run to check the script: 4 frames of 512^2, 2048^2 mosaic")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--mosaic", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=None, help="denoise_large chunk_size")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--block-workers", type=int, default=1,
                        help="blocks processed at once by denoise_large (default 1)")
    parser.add_argument("--skip-files", action="store_true")
    parser.add_argument("--identity-network", action="store_true",
                        help="mosaic only: replace the network by the identity, to measure "
                             "the out-of-core pipeline alone (results/scale_identity.txt)")
    parser.add_argument("--skip-mosaic", action="store_true")
    parser.add_argument("--results", default=None, metavar="PATH",
                        help="results file (default: results/scale.txt, scale_quick.txt or "
                             "scale_identity.txt)")
    parser.add_argument("--model", default=None, help="model file (default: see docstring)")
    parser.add_argument("--workdir", default=None, help="folder for the FITS files "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--_mosaic-child", dest="mosaic_child", default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mosaic_child:
        mosaic_child(json.loads(args.mosaic_child))
        return 0

    frames = args.frames or (4 if args.quick else 16)
    size = args.size or (512 if args.quick else 2048)
    mosaic = args.mosaic or (2048 if args.quick else 16384)
    chunk = args.chunk or (1024 if args.quick else 4096)
    results_path = os.path.join(RESULTS, "scale_quick.txt" if args.quick else "scale.txt")
    if args.identity_network:
        args.skip_files = True
        results_path = os.path.join(RESULTS, "scale_identity.txt")
    if args.results:
        results_path = args.results
    command = "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv)

    import torch

    import astro_unet

    workdir = args.workdir or tempfile.mkdtemp(prefix="astro_unet_scale_")
    os.makedirs(workdir, exist_ok=True)
    begin = time.perf_counter()
    lines = [
        "# astro_unet scaling: denoise_files and denoise_large (CPU)",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"- command: `{command.strip()}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__} (default threads "
        f"{torch.get_num_threads()}), astro_unet {astro_unet.__version__}",
        f"- load average (1 min) at start: {os.getloadavg()[0]:.2f}",
    ]
    try:
        model, description = model_spec(args, workdir)
        lines.append(f"- network: {description}")
        lines.append("")
        print("\n".join(lines), flush=True)

        if not args.skip_files:
            lines += run_files(workdir, model, frames, size, args.workers)
        if not args.skip_mosaic:
            lines += run_mosaic(workdir, model, mosaic, chunk, args.block_workers,
                                args.identity_network)
        lines.append(f"- total benchmark time: {time.perf_counter() - begin:.0f} s; load "
                     f"average at end: {os.getloadavg()[0]:.2f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
    with open(results_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"\nWrote {results_path}")
    return 0


def run_files(workdir, model, frames, size, workers_list):
    from astropy.io import fits

    folder = os.path.join(workdir, "frames")
    os.makedirs(folder, exist_ok=True)
    files = []
    for i in range(frames):
        path = os.path.join(folder, f"frame{i:03d}.fits")
        fits.PrimaryHDU(star_field(size, seed=i),
                        header=fits.Header({"BUNIT": "electron/s", "EXPTIME": EXPTIME})
                        ).writeto(path, overwrite=True)
        files.append(path)
    out = [f"## Many files: {frames} frames of {size}^2 (float32, electron/s), ratio 2", ""]
    load = os.getloadavg()[0]
    base = loop_baseline(files, os.path.join(workdir, "out_loop"), model)
    loop_mean = base["wall"] / frames
    rows = [("loop: read + denoise_ccd + write, 1 process", base["wall"], frames / base["wall"],
             "-", f"{sum(base['denoise_only']):.1f} s in denoise_ccd; first file "
                  f"{base['per_file'][0]:.2f} s (model load)", load)]
    print(f"loop: {base['wall']:.1f} s", flush=True)
    runs = {}
    for w in workers_list:
        load = os.getloadavg()[0]
        res = files_run(files, os.path.join(workdir, f"out_w{w}"), model, w)
        runs[w] = res
        tasks = sum(res["task_seconds"])
        startup = res["wall"] - res["run_wall"]
        rows.append((f"denoise_files, {w} worker process(es), "
                     f"{max(1, (os.cpu_count() or 1) // w)} torch thread(s) each", res["wall"],
                     frames / res["wall"], f"{tasks:.1f}",
                     f"cluster start + close {startup:.1f} s; {len(res['workers'])} worker(s) "
                     f"used", load))
        print(f"{w} workers: {res['wall']:.1f} s", flush=True)
    cores = os.cpu_count() or 1
    if 1 in workers_list and cores > 1:
        # one worker with the torch threads of one of `cores` workers: scaling at equal
        # threads per worker
        load = os.getloadavg()[0]
        res = runs["1x1"] = files_run(files, os.path.join(workdir, "out_w1t1"), model, 1,
                                      threads=1)
        rows.append(("denoise_files, 1 worker process, 1 torch thread", res["wall"],
                     frames / res["wall"], f"{sum(res['task_seconds']):.1f}",
                     f"cluster start + close {res['wall'] - res['run_wall']:.1f} s", load))
        print(f"1 worker, 1 thread: {res['wall']:.1f} s", flush=True)
    out += ["| run | wall (s) | frames/s | sum of task times (s) | notes | load |",
            "|---|---|---|---|---|---|"]
    for name, wall, rate, tasks, notes, load in rows:
        out.append(f"| {name} | {wall:.1f} | {rate:.3f} | {tasks} | {notes} | {load:.2f} |")
    out.append("")
    if 1 in runs:
        per_file = (sum(runs[1]["task_seconds"]) - base["wall"]) / frames
        out.append(f"- overhead per file of denoise_files (1 worker, sum of task times) over "
                   f"the loop: {per_file:+.2f} s ({100 * per_file / loop_mean:+.0f} % of "
                   f"{loop_mean:.2f} s per file); including the cluster's start: "
                   f"{(runs[1]['wall'] - base['wall']) / frames:+.2f} s per file")
    if 1 in runs and 2 in runs:
        out.append(f"- speed-up of 2 workers over 1: {runs[1]['wall'] / runs[2]['wall']:.2f}x "
                   f"(wall), {runs[1]['run_wall'] / runs[2]['run_wall']:.2f}x without the "
                   f"cluster start")
    if "1x1" in runs and cores in runs:
        out.append(f"- speed-up of {cores} workers over 1 at 1 torch thread each: "
                   f"{runs['1x1']['wall'] / runs[cores]['wall']:.2f}x (wall)")
    out.append("")
    print("\n".join(out), flush=True)
    return out


def run_mosaic(workdir, model, n, chunk, block_workers, identity=False):
    path = os.path.join(workdir, "mosaic.fits")
    t0 = time.perf_counter()
    write_mosaic(path, n)
    written = time.perf_counter() - t0
    size_gb = os.path.getsize(path) / 1e9
    load = os.getloadavg()[0]
    res = mosaic_run(path, os.path.join(workdir, "mosaic_denoised.fits"), model, chunk,
                     block_workers, identity)
    out_size = os.path.getsize(os.path.join(workdir, "mosaic_denoised.fits")) / 1e9
    peak_gb = res["peak_rss"] / 1e9
    from astropy.io import fits

    with fits.open(os.path.join(workdir, "mosaic_denoised.fits"), memmap=True) as hdul:
        names = [h.name for h in hdul]
        corner = hdul[0].section[:64, :64]
        finite = bool(math.isfinite(float(corner.sum())))
        tile, overlap = hdul[0].header["DNTILE"], hdul[0].header["DNOVERLP"]
    from astro_unet._inference import resolve

    multiple = resolve(model, "cpu")[1].size_multiple
    computed, whole, blocks = tiles_computed(n, tile, overlap, multiple, chunk)
    what = " with the network replaced by the identity (pipeline only)" if identity else ""
    out = [f"## Huge mosaic: {n}^2 float32 on disk ({size_gb:.2f} GB, written in "
           f"{written:.0f} s), denoise_large{what}", "",
           "| chunk_size | blocks at once | tile (overlap) | wall (s) | Mpix/s | peak RSS of the "
           "process tree (GB) | output | load |",
           "|---|---|---|---|---|---|---|---|",
           f"| {chunk} | {block_workers} | {tile} ({overlap}) | {res['seconds']:.1f} | "
           f"{n * n / 1e6 / res['seconds']:.2f} | {peak_gb:.2f} | {out_size:.2f} GB, HDUs "
           f"{', '.join(names)}, finite corner: {finite} | {load:.2f} |", "",
           f"- peak RSS {peak_gb:.2f} GB (limit {MEMORY_LIMIT_GB:g} GB, {res['samples']} samples "
           f"every 0.1 s of the child process and its children; child wall time "
           f"{res['wall']:.1f} s including the start of Python): "
           f"{'PASS' if peak_gb < MEMORY_LIMIT_GB else 'FAIL'}",
           f"- {blocks} blocks computed {computed} tiles, the whole-image plan has {whole} "
           f"({computed / whole:.2f}x: tiles that straddle a block edge are computed by "
           f"both blocks)", ""]
    print("\n".join(out), flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
