# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Speed and memory of `astro_unet.denoise_ccd` on the CPU.

For 1024^2, 2048^2 and 4096^2 float32 frames (synthetic star fields in
electron/s) this measures the wall time and the peak resident memory of one
`denoise_ccd` call with the default architecture (`DEFAULT_CONFIG`, random
weights: the speed does not depend on the weights) and the default tiling,
and compares it with the paper's mosaic (``mode="paper"``: 256-pixel tiles
moved by 32 pixels, same network).  The paper mode is run in full at 1024^2
only; for the larger frames its time is extrapolated from the measured time
per tile (the number of tiles is exact), which the table says.

Every measurement runs in a fresh subprocess, so that its peak RSS
(``resource.getrusage().ru_maxrss``) belongs to that call alone; the figure
reported is the peak minus the RSS just before the call, when the image is
already in memory.  The time is that of a first call (it includes one-time
costs such as the effective-receptive-field measurement and oneDNN kernel
set-up), the network being built before.

Usage::

    python benchmarks/speed.py --threads 0 1 --seams   # as in results/speed.txt
    python benchmarks/speed.py --sizes 1024 --no-sweep --no-paper   # quick look

Results go to stdout and to ``benchmarks/results/speed.txt`` (Markdown).
The machine load (``os.getloadavg``) is recorded with every row, because a
shared machine makes timings vary.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "speed.txt")
EXPTIME = 100.0


def star_field(n, seed=0):
    """A float32 star field in electron/s (sky + Gaussian stars + Poisson noise)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    expected = np.full((n, n), 5.0 * EXPTIME, dtype=np.float32)     # 5 e/s sky
    half = 7
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    for _ in range(n * n // 8000):
        y, x = rng.integers(half, n - half, 2)
        sigma = rng.uniform(1.0, 2.0)
        flux = 10 ** rng.uniform(2.5, 6.0)
        stamp = flux / (2 * np.pi * sigma ** 2) * np.exp(-(yy ** 2 + xx ** 2) / (2 * sigma ** 2))
        expected[y - half:y + half + 1, x - half:x + half + 1] += stamp.astype(np.float32)
    counts = rng.poisson(expected)
    del expected
    image = (counts / EXPTIME).astype(np.float32)
    del counts
    return image


def worker(spec):
    """Run one measurement (in a subprocess) and print a JSON line."""
    import numpy as np
    import torch
    from astropy.nddata import CCDData

    from astro_unet import denoise_ccd
    from astro_unet.model import DEFAULT_CONFIG, AstroUNet
    from astro_unet.tiling import plan_tiles

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    net = AstroUNet(DEFAULT_CONFIG)
    n = spec["size"]
    image = star_field(n)
    ccd = CCDData(image, unit="electron/s", meta={"EXPTIME": EXPTIME})
    kwargs = dict(ratio=2, model=net, device="cpu", mode=spec["mode"])
    if spec.get("tile"):
        kwargs["tile_size"] = spec["tile"]
    if spec.get("batch"):
        kwargs["batch_size"] = spec["batch"]
    import psutil

    rss_before = psutil.Process().memory_info().rss
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = denoise_ccd(ccd, **kwargs)
    elapsed = time.perf_counter() - t0
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tile, overlap = int(out.meta["DNTILE"]), int(out.meta["DNOVERLP"])
    plan = plan_tiles(image.shape, tile_size=tile, overlap=overlap,
                      size_multiple=net.size_multiple, fit=spec["mode"] == "feather")
    result = {
        "size": n, "mode": spec["mode"], "seconds": elapsed,
        "peak_mb": (peak_after - rss_before) / 2 ** 20 if peak_after > peak_before else None,
        "image_mb": image.nbytes / 2 ** 20, "tile": tile, "tile_shape": plan.tile_shape,
        "overlap": overlap, "tiles": plan.n_tiles,
        "batch": kwargs.get("batch_size"), "threads": torch.get_num_threads(),
        "load_start": load, "load_end": os.getloadavg()[0],
        "finite": bool(np.isfinite(out.data).all()),
    }
    print("RESULT " + json.dumps(result), flush=True)


def seams(overlaps=(8, 16, 32, 48, 64), n=768, tile=256, seed=1):
    """
    Tile-seam error against overlap: feathered tiles versus one whole-image
    pass of the default network (random weights), relative to the standard
    deviation of the network's correction.  Returns text lines.
    """
    import numpy as np
    import torch

    from astro_unet.model import DEFAULT_CONFIG, AstroUNet, effective_receptive_field
    from astro_unet.tiling import process_tiles

    torch.manual_seed(seed)
    net = AstroUNet(DEFAULT_CONFIG).eval()
    rng = np.random.default_rng(0)
    image = np.arcsinh(rng.poisson(20, (n, n)) / 10.0).astype(np.float32)

    def forward(tiles):
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(tiles))[:, None]
            return net(x, torch.full((len(tiles), 1), 2.0)).numpy()

    whole = forward(image[None])[0, 0]
    scale = (whole - image).std()
    lines = [f"Tile seams (DEFAULT_CONFIG, random weights, seed {seed}; effective receptive "
             f"field {effective_receptive_field(net)} px at 99 %, "
             f"{effective_receptive_field(net, fraction=0.999)} px at 99.9 %): "
             f"{n}^2 image, {tile}-pixel tiles versus one whole-image pass, error relative "
             "to the std of the network's correction", "",
             "| overlap (px) | max error | rms error |", "|---|---|---|"]
    for ov in overlaps:
        tiled = process_tiles(image, forward, tile_size=tile, overlap=ov, batch_size=4,
                              size_multiple=net.size_multiple)[0]
        lines.append(seam_row(ov, tiled, whole, scale))
    return lines


def seam_row(overlap, tiled, whole, scale):
    """Table row: largest and rms error of ``tiled`` against ``whole``, in units of ``scale``."""
    import numpy as np

    d = np.abs(tiled - whole)
    return f"| {overlap} | {d.max() / scale:.3f} | {np.sqrt((d ** 2).mean()) / scale:.4f} |"


def run(spec):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker failed for {spec}:\n{proc.stdout}\n{proc.stderr}")


def fmt_mb(value):
    return "n/a" if value is None else f"{value:.0f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="torch thread counts to run the main table with "
                             "(0: torch's default)")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper mosaic")
    parser.add_argument("--no-sweep", action="store_true",
                        help="skip the tile/batch/thread sweep at 2048^2")
    parser.add_argument("--seams", action="store_true",
                        help="also measure tile-seam errors against the overlap")
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    import torch

    from astro_unet.model import DEFAULT_CONFIG

    started = time.perf_counter()
    lines = []

    def emit(text=""):
        print(text, flush=True)
        lines.append(text)

    emit("# astro_unet denoise_ccd speed (CPU)")
    emit()
    emit(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    emit(f"- command: `python benchmarks/speed.py {' '.join(argv or sys.argv[1:])}`".rstrip())
    emit(f"- machine: {platform.processor() or platform.machine()}, "
         f"{os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}"
         f" (default threads: {torch.get_num_threads()})")
    emit(f"- network: DEFAULT_CONFIG = {DEFAULT_CONFIG} (random weights)")
    emit(f"- load average (1 min) at start: {os.getloadavg()[0]:.2f}; the 'load' column is "
         "the value when each measurement started")
    emit("- time: one denoise_ccd call in a fresh process (first call, model built "
         "before); peak RSS: above the RSS just before the call (image already loaded)")
    emit()
    emit("| frame | threads | default: time (s) | peak RSS (MB) | tiles (side, overlap) "
         "| load | paper mosaic: time (s) | paper tiles | speed-up |")
    emit("|---|---|---|---|---|---|---|---|---|")

    feather_by_threads = {}
    paper_base = {}
    for nthreads in args.threads:
        threads = nthreads or None
        feather = {}
        for n in args.sizes:
            res = run({"size": n, "mode": "feather", "threads": threads})
            feather[n] = res
            print(f"  feather {n} threads={res['threads']}: {res['seconds']:.2f} s",
                  file=sys.stderr, flush=True)
        feather_by_threads[nthreads] = feather
        paper = {}
        if not args.no_paper:
            base = run({"size": 1024, "mode": "paper", "threads": threads})
            paper_base[nthreads] = base
            per_tile = base["seconds"] / base["tiles"]
            print(f"  paper 1024: {base['seconds']:.1f} s", file=sys.stderr, flush=True)
            for n in args.sizes:
                if n == 1024:
                    paper[n] = dict(base, measured=True)
                else:
                    from astro_unet.tiling import plan_tiles

                    tiles = plan_tiles((n, n), tile_size=256, overlap=224, size_multiple=16,
                                       fit=False).n_tiles
                    paper[n] = {"seconds": per_tile * tiles, "tiles": tiles,
                                "measured": False}
        for n in args.sizes:
            f = feather[n]
            side = "x".join(str(v) for v in f["tile_shape"])
            if n in paper:
                p = paper[n]
                ptime = f"{p['seconds']:.1f}" + ("" if p["measured"] else " (extrapolated)")
                speed = f"{p['seconds'] / f['seconds']:.0f}x"
                ptiles = str(p["tiles"])
            else:
                ptime, speed, ptiles = "-", "-", "-"
            emit(f"| {n}^2 | {f['threads']} | {f['seconds']:.2f} | {fmt_mb(f['peak_mb'])} | "
                 f"{f['tiles']} ({side}, {f['overlap']}) | {f['load_start']:.2f} | {ptime} | "
                 f"{ptiles} | {speed} |")
    for nthreads, base in paper_base.items():
        emit()
        emit(f"Paper mosaic ({base['threads']} threads) measured in full at 1024^2 "
             f"({base['tiles']} tiles of 256^2, {base['seconds']:.1f} s, peak RSS "
             f"{fmt_mb(base['peak_mb'])} MB, load {base['load_start']:.2f}); larger frames: "
             "that time per tile times their exact tile count.")
    threads = args.threads[0] or None

    if not args.no_sweep:
        emit()
        emit("Tile size / batch / threads at 2048^2 (default overlap):")
        emit()
        emit("| tile | batch | threads | time (s) | peak RSS (MB) | tiles | load |")
        emit("|---|---|---|---|---|---|---|")
        for tile, batch, nthreads in [(256, 1, threads), (512, 1, threads), (1024, 1, threads),
                                      (512, 2, threads), (512, 1, 1)]:
            res = run({"size": 2048, "mode": "feather", "tile": tile, "batch": batch,
                       "threads": nthreads})
            emit(f"| {tile} | {batch} | {res['threads']} | {res['seconds']:.2f} | "
                 f"{fmt_mb(res['peak_mb'])} | {res['tiles']} | {res['load_start']:.2f} |")

    if args.seams:
        emit()
        for line in seams():
            emit(line)

    emit()
    checks = []
    for nthreads, feather in feather_by_threads.items():
        if 4096 not in feather:
            continue
        f = feather[4096]
        tag = f"[{f['threads']} threads]"
        checks.append(f"{tag} 4096^2 in {f['seconds']:.1f} s (target <= 60 s): "
                      + ("PASS" if f["seconds"] <= 60 else "FAIL"))
        if f["peak_mb"] is not None:
            checks.append(f"{tag} peak RSS {f['peak_mb']:.0f} MB above the image "
                          "(target <= 2048 MB): " + ("PASS" if f["peak_mb"] <= 2048 else "FAIL"))
        if nthreads in paper_base:
            base = paper_base[nthreads]
            from astro_unet.tiling import plan_tiles

            tiles = plan_tiles((4096, 4096), tile_size=256, overlap=224, size_multiple=16,
                               fit=False).n_tiles
            ratio = base["seconds"] / base["tiles"] * tiles / f["seconds"]
            checks.append(f"{tag} {ratio:.0f}x faster than the paper mosaic (target >= 40x): "
                          + ("PASS" if ratio >= 40 else "FAIL"))
    for c in checks:
        emit(f"- {c}")
    emit(f"- total benchmark time: {time.perf_counter() - started:.0f} s; load average at end: "
         f"{os.getloadavg()[0]:.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
