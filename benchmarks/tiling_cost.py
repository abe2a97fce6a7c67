# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Cost of the default tiling against one whole-image pass of the same network.

``denoise_ccd`` cuts an image into overlapping tiles (overlap: the model's
recommendation, from its effective receptive field) and blends them.  The
overlap is computed twice, so tiling costs more than one pass over the whole
image.  This script measures that factor at 2048 x 2048 pixels, in one
process, alternating the runs so that a change in the machine's speed hits
both alike, and reports the ratio of the medians (not bare seconds).

    python benchmarks/tiling_cost.py [--model default] [--tiles 512 1024] [--repeats 3]

"One pass" is ``tile_size=2048`` (the largest tile ``denoise_ccd`` accepts):
a single tile covering the image.
"""

import argparse
import statistics
import sys
import time

import numpy as np
import astropy.units as u
from astropy.nddata import CCDData

from astro_unet import denoise_ccd


def star_field(size, seed=0):
    rng = np.random.default_rng(seed)
    image = np.full((size, size), 20.0)
    yy, xx = np.mgrid[:64, :64]
    for _ in range(400):
        y, x = rng.integers(0, size - 64, 2)
        image[y:y + 64, x:x + 64] += rng.uniform(50, 5000) * np.exp(
            -((yy - 32) ** 2 + (xx - 32) ** 2) / 6.0)
    return CCDData(rng.poisson(image).astype(np.float32), unit=u.electron,
                   meta={"EXPTIME": 100.0})


def card(meta, key):
    value = meta[key]
    return value[0] if isinstance(value, tuple) else value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="model name or file (default: default)")
    p.add_argument("--size", type=int, default=2048, help="image side (default 2048)")
    p.add_argument("--tiles", type=int, nargs="+", default=[None],
                   help="tile sizes to compare with one pass; 0 or none: denoise_ccd's default")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    ccd = star_field(args.size)
    kwargs = dict(ratio=2, model=args.model, device=args.device, estimate="mean")
    one = dict(kwargs, tile_size=args.size)
    denoise_ccd(CCDData(ccd.data[:256, :256], unit=u.electron), **kwargs)  # load, measure ERF
    denoise_ccd(ccd, **one)                        # warm-up at this size (oneDNN set-up)
    times = {"one pass": []}
    info = {}
    for _ in range(args.repeats):
        for tile in args.tiles:
            label = f"tile {tile if tile else 'default'}"
            t = time.perf_counter()
            out = denoise_ccd(ccd, **(dict(kwargs, tile_size=tile) if tile else kwargs))
            times.setdefault(label, []).append(time.perf_counter() - t)
            info[label] = (card(out.meta, "DNTILE"), card(out.meta, "DNOVERLP"))
        t = time.perf_counter()
        ref = denoise_ccd(ccd, **one)
        times["one pass"].append(time.perf_counter() - t)
        info["one pass"] = (card(ref.meta, "DNTILE"), 0)
    base = statistics.median(times["one pass"])
    print(f"# {args.size}^2, model {args.model} ({card(ref.meta, 'DNMODEL')}), "
          f"device {args.device}, "
          f"{args.repeats} alternating repeats; command: python benchmarks/tiling_cost.py "
          + " ".join(sys.argv[1:] if argv is None else argv))
    print("| run | tile | overlap | median time / one pass |")
    print("|---|---|---|---|")
    for label, values in times.items():
        tile, overlap = info[label]
        print(f"| {label} | {tile} | {overlap} | {statistics.median(values) / base:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
