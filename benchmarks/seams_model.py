# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Tile-seam error of a trained model: `denoise_ccd` in 256-pixel tiles with
several overlaps against one pass over the whole 1024x1024 frame (a star
field of ``benchmarks/speed.py``, electron/s, ratio 2).

The error is given relative to the standard deviation of the network's
correction (output minus input), as in ``benchmarks/speed.py --seams``
(the same `seam_row`).

Usage::

    python benchmarks/seams_model.py MODEL [MODEL ...]   # registry names or model files
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def seams(model, overlaps=(32, 64, 80, 128, 192), n=1024, tile=256):
    import numpy as np
    from astropy.nddata import CCDData

    from astro_unet import denoise_ccd, load_model
    from astro_unet.model import effective_receptive_field

    sys.path.insert(0, HERE)
    from speed import seam_row, star_field

    net, info = load_model(model)
    print(f"{model}: effective receptive field {effective_receptive_field(net)} px (99 %), "
          f"stored overlap {(info.get('normalization') or {}).get('overlap')}")
    ccd = CCDData(star_field(n, seed=3).astype(np.float32), unit="electron/s",
                  meta={"EXPTIME": 100.0})
    whole = denoise_ccd(ccd, ratio=2, model=model, tile_size=n, overlap=0, device="cpu").data
    scale = (whole - ccd.data).std()
    print("| overlap (px) | max error | rms error |\n|---|---|---|")
    for ov in overlaps:
        tiled = denoise_ccd(ccd, ratio=2, model=model, tile_size=tile, overlap=ov,
                            device="cpu").data
        print(seam_row(ov, tiled, whole, scale))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    for model in parser.parse_args(argv).models:
        seams(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
