# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Check `astro_unet.denoise_ccd` on a CUDA GPU against the CPU, and time it.

1. Build the default network (`DEFAULT_CONFIG`, random weights, seed 0) or
   load ``--model PATH``.
2. Denoise a synthetic 1024^2 and 4096^2 star field (float32, electron/s)
   on the CPU (float32) and on CUDA (autocast bf16/fp16 + channels_last) and
   report the largest relative difference on source pixels (pixels more
   than 10 robust standard deviations above the median of the CPU result);
   target < 1e-2.
3. Time the 4096^2 call end to end (numpy in, numpy out: host -> device ->
   host included) after two warm-up calls; target <= 0.5 s on one H100.

Usage::

    python benchmarks/gpu_check.py [--model PATH] [--sweep]
    python benchmarks/gpu_check.py --device cpu --sizes 256 512 --repeats 1  # dry run

Without CUDA it prints a message and exits with status 0.  ``--device cpu``
runs the same comparison CPU against CPU (a dry run of this script).  With
``--sweep`` it also times a few tile sizes and batch sizes at 4096^2.
Exit status 1 if a target is missed.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from speed import EXPTIME, star_field  # noqa: E402


def source_mask(reference):
    import numpy as np

    med = np.median(reference)
    mad = 1.4826 * np.median(np.abs(reference - med))
    return reference > med + 10 * mad


def denoise(ccd, model, device, **kwargs):
    from astro_unet import denoise_ccd

    t0 = time.perf_counter()
    out = denoise_ccd(ccd, ratio=2, model=model, device=device, **kwargs)
    return out, time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model file (default: DEFAULT_CONFIG, random weights)")
    parser.add_argument("--device", default="cuda", help="device to check (default cuda)")
    parser.add_argument("--sweep", action="store_true",
                        help="also time tile sizes 512/1024/2048 and batch sizes at 4096^2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--autocast", default="auto",
                        choices=["auto", "bfloat16", "float16", "float32"],
                        help="mixed precision on CUDA (astro_unet.conf.autocast)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096],
                        help="frame sides compared (the largest is timed)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from astropy.nddata import CCDData

    from astro_unet import conf
    from astro_unet import denoise as dn
    from astro_unet.model import DEFAULT_CONFIG, AstroUNet

    conf.autocast = "none" if args.autocast == "float32" else args.autocast
    device = args.device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            print(f"CUDA is not available (torch {torch.__version__}, "
                  f"CUDA build: {torch.version.cuda}); nothing to check.")
            return 0
        name = torch.cuda.get_device_name(torch.device(device))
        dtype = args.autocast
        if dtype == "auto":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        print(f"device: {name} ({device}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"autocast {dtype}")
    else:
        print(f"device: {device} (dry run, no CUDA), torch {torch.__version__}")
    print(f"CPU threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")

    if args.model:
        model = args.model
        print(f"model: {args.model}")
    else:
        torch.manual_seed(0)
        model = AstroUNet(DEFAULT_CONFIG)
        model.normalization = dict(dn.DEFAULT_NORMALIZATION)
        print(f"model: DEFAULT_CONFIG, random weights ({DEFAULT_CONFIG})")

    failures = []
    frames = {}
    for n in args.sizes:
        image = star_field(n)
        ccd = CCDData(image, unit="electron/s", meta={"EXPTIME": EXPTIME})
        frames[n] = ccd
        cpu, t_cpu = denoise(ccd, model, "cpu")
        gpu, t_gpu = denoise(ccd, model, device)
        ref = np.asarray(cpu.data, dtype=float)
        got = np.asarray(gpu.data, dtype=float)
        src = source_mask(ref)
        rel = np.abs(got - ref)[src] / np.abs(ref[src])
        sky = ~src
        sky_sigma = 1.4826 * np.median(np.abs(ref[sky] - np.median(ref[sky])))
        max_rel = float(rel.max()) if rel.size else float("nan")
        print(f"{n}^2: {src.sum()} source pixels; max relative difference {max_rel:.2e}, "
              f"median {np.median(rel):.2e}; sky: max |diff| = "
              f"{np.abs(got - ref)[sky].max() / sky_sigma:.2e} sky sigma; "
              f"first-call times: cpu {t_cpu:.2f} s, {device} {t_gpu:.2f} s "
              f"(tile {gpu.meta['DNTILE']}, overlap {gpu.meta['DNOVERLP']})")
        if not max_rel < 1e-2:
            failures.append(f"{n}^2 max relative difference {max_rel:.2e} >= 1e-2")

    big = max(args.sizes)
    ccd = frames[big]
    for _ in range(2):
        denoise(ccd, model, device)
    times = sorted(denoise(ccd, model, device)[1] for _ in range(args.repeats))
    median = times[len(times) // 2]
    print(f"{big}^2 end to end on {device}: min {times[0]:.3f} s, median "
          f"{median:.3f} s over {args.repeats} calls (after 2 warm-up calls)")
    if device.startswith("cuda") and big == 4096 and median > 0.5:
        failures.append(f"4096^2 median {median:.3f} s > 0.5 s")

    if args.sweep:
        print(f"sweep at {big}^2 (median of 3 after 1 warm-up):")
        for tile in (512, 1024, 2048):
            for batch in (2, 4, 8, 16):
                denoise(ccd, model, device, tile_size=tile, batch_size=batch)
                t = sorted(denoise(ccd, model, device, tile_size=tile, batch_size=batch)[1]
                           for _ in range(3))[1]
                print(f"  tile {tile:5d} batch {batch:3d}: {t:.3f} s")
        if device.startswith("cuda"):
            print(f"  peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")

    for f in failures:
        print("FAIL:", f)
    if not failures:
        print("all targets met" if device.startswith("cuda") else "dry run finished")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
