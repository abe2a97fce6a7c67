# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The ``astro-unet`` command.

Subcommands::

    astro-unet denoise IN.fits [-o OUT.fits] --ratio R [--model NAME_OR_PATH] ...
    astro-unet denoise A.fits B.fits DIR/ 'raw/*.fits' --output-dir OUT --ratio R
                       [--workers N | --scheduler ADDRESS] ...
    astro-unet simulate IN.fits -o OUT.fits --ratio R [--seed N] [--detector NAME] ...
    astro-unet compare REF.fits TEST.fits [--input IN.fits] [--table OUT.ecsv] ...
    astro-unet models [--list] [--download NAME] [--verify NAME]
    astro-unet demo [--ratio R] [--model NAME_OR_PATH] [--output-dir DIR]
    astro-unet train --config default|paper|smoke|FILE [--time-limit MIN] ...
    astro-unet --version

Output files (``denoise``, ``simulate``) keep the structure of the input
file: every HDU is copied unchanged except

* the processed image HDU (``--hdu``; default: the first HDU with image
  data), whose data are replaced (float32, or float64 when the input was
  float64) and whose header is the input header plus the keywords and
  ``HISTORY`` lines the processing step added (``BSCALE``/``BZERO``/
  ``BLANK``/``CHECKSUM``/``DATASUM`` are removed, ``BUNIT`` is set when the
  unit was given with ``--unit``);
* the ``UNCERT`` and ``MASK`` extensions, the `~astropy.nddata.CCDData`
  convention read back by ``CCDData.read``: replaced by the result's
  uncertainty/mask when the input had them, appended when the result has
  an uncertainty (or a mask with a set pixel) and the input had none, and
  dropped when the result has none (they would describe the input, not the
  output).  Other error or data-quality extensions (e.g. HST ``ERR``/``DQ``)
  are copied unchanged and still describe the input.

When the processed image is an extension, primary-header keywords that the
extension does not have (``EXPTIME``, ``GAIN``, ...) are visible to the
processing step, as with ``CCDData.read`` of a file without primary data;
changed values are written to the extension header only.

Several inputs (or a directory, a glob, ``--workers``, ``--scheduler``) make
``denoise`` run `astro_unet.denoise_files` on a Dask cluster: it prints a
table with one row per file (``ok``, ``skipped`` when the output exists,
``error: ...``); a file that fails does not stop the others.

Exit status: 0 on success, 1 when the command fails (the reason is printed
as one ``astro-unet: error: ...`` line; ``--debug`` adds the traceback) or
when any of several files failed, and 2 for command-line usage errors.
"""

import argparse
import math
import os
import re
import sys
import traceback

import numpy as np
import astropy.units as u

from ._utils import error_message
from .fitsio import check_output, default_output, read_ccd, write_like

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

PROG = "astro-unet"


class CommandError(Exception):
    """A problem with the command's inputs, reported as one line."""


# --------------------------------------------------------------------------
# argument types


def _hdu_arg(text):
    """``--hdu`` value: an index (``1``), a name (``SCI``) or ``NAME,VER`` (``SCI,2``)."""
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("empty HDU")
    if text.lstrip("-").isdigit():
        return int(text)
    if "," in text:
        name, _, ver = text.partition(",")
        if not ver.strip().isdigit() or not name.strip():
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an HDU: give an index, a name or NAME,VERSION (e.g. SCI,2)"
            )
        return (name.strip().upper(), int(ver))
    return text.upper()


def _unit_arg(text):
    try:
        return u.Unit(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"unknown unit {text!r} ({err})") from None


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _number_or_quantity(text):
    """A plain number, or a quantity string such as ``'7 electron / h'``."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return u.Quantity(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number nor a quantity like '7 electron/h'"
        ) from None


def _sky_arg(text):
    if text.strip().lower() == "header":
        return "header"
    return _number_or_quantity(text)


# --------------------------------------------------------------------------
# subcommands


def _add_io_options(parser, *, unit=True):
    parser.add_argument("--hdu", type=_hdu_arg, default=None, metavar="HDU",
                        help="image HDU: index, name or NAME,VER (e.g. SCI,1); "
                             "default: the first HDU with image data")
    if unit:
        parser.add_argument("--unit", type=_unit_arg, default=None,
                            help="image unit when BUNIT is missing or wrong "
                                 "(electron, electron/s, adu, adu/s)")


def add_denoise_command(subparsers):
    """Register ``astro-unet denoise``."""
    p = subparsers.add_parser(
        "denoise", help="denoise images with an Astro U-net model",
        description="Make a short exposure look like one RATIO times longer "
                    "(astro_unet.denoise_ccd). The output keeps every other HDU of "
                    "the input file. Several files, a directory or a glob are denoised "
                    "on a Dask cluster (astro_unet.denoise_files): a local one with "
                    "--workers N, or an existing one with --scheduler ADDRESS; existing "
                    "outputs are skipped unless --overwrite.")
    p.add_argument("inputs", nargs="+", metavar="IN.fits",
                   help="input FITS file(s), directories or quoted glob patterns")
    p.add_argument("-o", "--output", metavar="OUT.fits", default=None,
                   help="output file of a single input (default: IN_denoised.fits next to "
                        "the input, or in --output-dir)")
    p.add_argument("--output-dir", metavar="DIR", default=None,
                   help="folder for the outputs (default: next to each input)")
    p.add_argument("--suffix", default="_denoised",
                   help="added to the input name to make the output name "
                        "(default: %(default)s)")
    p.add_argument("--ratio", "-r", type=float, required=True,
                   help="exposure-time ratio r > 1 (long / short)")
    p.add_argument("--model", "-m", default="default", metavar="NAME_OR_PATH",
                   help="registered model name or model file (default: %(default)s)")
    p.add_argument("--device", default=None,
                   help="torch device: auto, cpu, cuda, cuda:N (default: astro_unet.conf.device)")
    p.add_argument("--tile-size", type=_positive_int, default=None, metavar="N",
                   help="tile size in pixels (default: the model's)")
    p.add_argument("--overlap", type=int, default=None, metavar="N",
                   help="tile overlap in pixels (default: from the receptive field)")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="tiles per forward pass")
    p.add_argument("--mode", choices=("feather", "paper"), default=None,
                   help="feather: overlapping tiles with feathered blending (default); "
                        "paper: the paper's 256 px tiles moved by 32 px, averaged")
    p.add_argument("--estimate", choices=("extended", "long", "mean"), default=None,
                   help="extended: the expected exposure RATIO times longer that begins "
                        "with this one, (input + (RATIO - 1) estimate) / RATIO (default); "
                        "long: an image with the noise of a real exposure RATIO times "
                        "longer; mean: the network's expected value alone")
    p.add_argument("--saturation", type=float, default=None, metavar="LEVEL",
                   help="saturation level in the image's unit: pixels at or above it are "
                        "masked (default: SATURATE keyword of a counts image)")
    p.add_argument("--extrapolate", action="store_true",
                   help="allow ratios more than twice the largest the model was trained on")
    _add_io_options(p)
    p.add_argument("--exptime", type=float, default=None, metavar="S",
                   help="exposure time in seconds (default: EXPTIME keyword)")
    p.add_argument("--gain", type=float, default=None, metavar="G",
                   help="gain in electron/adu for adu images (default: GAIN keyword)")
    p.add_argument("--read-noise", type=_number_or_quantity, default=None, metavar="E",
                   help="read noise in electrons (default: the model's)")
    cluster = p.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                         help="denoise the files on a local Dask cluster of N worker "
                              "processes")
    cluster.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="denoise the files on the Dask cluster of this scheduler "
                              "(e.g. tcp://10.0.0.1:8786)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (several files: denoise again "
                        "instead of skipping them)")
    p.set_defaults(func=_run_denoise)
    return p


def _denoise_kwargs(args):
    kwargs = {}
    for key, value in (("device", args.device), ("tile_size", args.tile_size),
                       ("overlap", args.overlap), ("batch_size", args.batch_size),
                       ("exposure_time", args.exptime), ("gain", args.gain),
                       ("read_noise", args.read_noise), ("mode", args.mode),
                       ("estimate", args.estimate), ("saturation", args.saturation)):
        if value is not None:
            kwargs[key] = value
    if args.extrapolate:
        kwargs["extrapolate"] = True
    return kwargs


def _is_batch(args):
    """Several inputs, a directory, a glob or a cluster option: `denoise_files`."""
    if len(args.inputs) > 1 or args.workers is not None or args.scheduler is not None:
        return True
    item = args.inputs[0]
    return os.path.isdir(item) or (any(c in item for c in "*?[") and not os.path.exists(item))


def _run_denoise(args):
    if _is_batch(args):
        return _run_denoise_files(args)
    source = args.inputs[0]
    if args.output is not None and args.output_dir is not None:
        raise CommandError("give either -o/--output or --output-dir, not both.")
    if args.output is not None:
        output = args.output
    else:
        folder = args.output_dir if args.output_dir is not None else os.path.dirname(source)
        output = default_output(os.path.join(folder, os.path.basename(source)), args.suffix)
    if os.path.abspath(output) == os.path.abspath(source) and not args.overwrite:
        raise CommandError(f"{output} is the input: give another --suffix or -o.")
    check_output(output, args.overwrite)
    from .files import denoise_file

    kwargs = _denoise_kwargs(args)
    if args.progress:
        kwargs["progress"] = True
    denoise_file(source, output, ratio=args.ratio, model=args.model, hdu=args.hdu,
                 unit=args.unit, overwrite=args.overwrite, **kwargs)
    print(f"Wrote {output}")
    return 0


def _run_denoise_files(args):
    if args.output is not None:
        raise CommandError("-o/--output names one output file: with several inputs, a "
                           "directory or a glob use --output-dir.")
    if args.progress:
        raise CommandError("--progress shows the tiles of one image: it is not available "
                           "with several inputs.")
    from .files import denoise_files

    table = denoise_files(args.inputs, args.output_dir, ratio=args.ratio, model=args.model,
                          client=args.scheduler, workers=args.workers,
                          overwrite=args.overwrite, suffix=args.suffix, hdu=args.hdu,
                          unit=args.unit, **_denoise_kwargs(args))
    shown = table.copy(copy_data=False)
    shown["status"] = [_flag_words(status) for status in table["status"]]
    shown["seconds"].info.format = ".2f"
    for line in shown.pformat(max_lines=-1, max_width=-1):
        print(line)
    meta = table.meta
    print(f"Denoised {meta['n_ok']}, skipped {meta['n_skipped']} (output exists; "
          f"--overwrite to redo), failed {meta['n_error']} of {len(table)} files in "
          f"{meta['wall_seconds']:.1f} s.")
    return 1 if meta["n_error"] else 0


def add_simulate_command(subparsers):
    """Register ``astro-unet simulate``."""
    p = subparsers.add_parser(
        "simulate", help="simulate a shorter exposure of an image",
        description="Simulate an exposure RATIO times shorter with the paper's noise "
                    "model (astro_unet.simulate_short_exposure).")
    p.add_argument("input", metavar="IN.fits", help="input (long) exposure")
    p.add_argument("-o", "--output", metavar="OUT.fits", required=True, help="output file")
    p.add_argument("--ratio", "-r", type=float, required=True,
                   help="exposure-time ratio r > 1 (long / short)")
    p.add_argument("--seed", type=int, default=None, help="random seed (reproducible output)")
    p.add_argument("--detector", default=None,
                   help="detector preset: wfc3_uvis, acs_wfc, generic "
                        "(default: from INSTRUME/DETECTOR)")
    p.add_argument("--read-noise", type=_number_or_quantity, default=None, metavar="E",
                   help="read noise in electrons (or a quantity, e.g. '3.1 electron')")
    p.add_argument("--dark-current", type=_number_or_quantity, default=None, metavar="D",
                   help="dark current in electron/s (or a quantity, e.g. '7 electron/h')")
    p.add_argument("--sky", type=_sky_arg, default=None,
                   help="sky level subtracted from the image (image unit), or 'header' "
                        "for MDRIZSKY")
    p.add_argument("--exptime", type=float, default=None, metavar="S",
                   help="exposure time in seconds (default: EXPTIME keyword)")
    p.add_argument("--gain", type=float, default=None, metavar="G",
                   help="gain in electron/adu for adu images")
    _add_io_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_run_simulate)
    return p


def _run_simulate(args):
    check_output(args.output, args.overwrite)
    ccd, index = read_ccd(args.input, args.hdu, args.unit)
    from .simulate import simulate_short_exposure

    result = simulate_short_exposure(
        ccd, args.ratio, exposure_time=args.exptime, read_noise=args.read_noise,
        dark_current=args.dark_current, sky=args.sky, gain=args.gain,
        detector=args.detector, seed=args.seed)
    write_like(args.input, index, ccd, result, args.output, overwrite=args.overwrite,
               unit_given=args.unit is not None)
    print(f"Wrote {args.output}")
    return 0


def add_compare_command(subparsers):
    """Register ``astro-unet compare``."""
    p = subparsers.add_parser(
        "compare", help="photometric comparison of a test image with a reference",
        description="Detect, measure and cross-match sources in REF and TEST "
                    "(astro_unet.photometric_comparison) and print the summary.")
    p.add_argument("reference", metavar="REF.fits", help="reference (e.g. long exposure)")
    p.add_argument("test", metavar="TEST.fits", help="image to evaluate (e.g. denoised)")
    p.add_argument("--input", metavar="IN.fits", default=None,
                   help="the noisy input image (adds its photometry and the SNR gain)")
    p.add_argument("--threshold", choices=("self", "reference"), default="self",
                   help="detection threshold from each image's own rms (self, the paper) "
                        "or from the reference's (default: %(default)s)")
    p.add_argument("--detection-threshold", type=float, default=7.0, metavar="SIGMA",
                   help="detection threshold in background rms (default: %(default)s)")
    p.add_argument("--min-area", type=_positive_int, default=10, metavar="NPIX",
                   help="minimum source area in pixels (default: %(default)s)")
    p.add_argument("--aperture-radius", type=float, default=5.0, metavar="PIX",
                   help="aperture radius in pixels (default: %(default)s)")
    p.add_argument("--match-radius", type=float, default=2.0, metavar="PIX",
                   help="cross-match radius in pixels (default: %(default)s)")
    p.add_argument("--match", choices=("auto", "pixel", "sky"), default="auto",
                   help="match on pixel or sky positions (default: %(default)s)")
    p.add_argument("--exptime", type=float, default=None, metavar="S",
                   help="exposure time in seconds for all images (default: EXPTIME)")
    p.add_argument("--gain", type=float, default=None, metavar="G",
                   help="gain in electron/adu for all images (default: GAIN)")
    _add_io_options(p)
    p.add_argument("--table", metavar="OUT.ecsv", default=None,
                   help="write the matched source table (ECSV)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing table file")
    p.set_defaults(func=_run_compare)
    return p


def _format_value(value):
    if isinstance(value, u.Quantity) and value.isscalar:
        return f"{_format_value(value.value)} {value.unit}".rstrip()
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{float(value):.6g}"
    if value is None:
        return "-"
    return str(value)


def _flatten(summary, prefix=""):
    for key, value in summary.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _format_summary(summary):
    """The summary dict as aligned ``key  value`` lines (nested dicts as ``a.b``)."""
    items = list(_flatten(summary))
    if not items:
        return ""
    width = max(len(key) for key, _ in items)
    return "\n".join(f"{key:<{width}}  {_format_value(value)}" for key, value in items)


#: Printed after ``compare --threshold self`` (the default).
_THRESHOLD_HINT = (
    "Note: each image was thresholded at its own background rms (--threshold self); "
    "with --threshold reference every image is thresholded at the reference's level, "
    "so that only sources the reference can confirm are detected.")


def _run_compare(args):
    from .photometry import photometric_comparison

    if args.table is not None:
        check_output(args.table, args.overwrite)
    reference, _ = read_ccd(args.reference, args.hdu, args.unit)
    test, _ = read_ccd(args.test, args.hdu, args.unit)
    inp = None
    if args.input is not None:
        inp, _ = read_ccd(args.input, args.hdu, args.unit)
    kwargs = {}
    if args.exptime is not None:
        kwargs["exposure_time"] = args.exptime
    if args.gain is not None:
        kwargs["gain"] = args.gain
    table, summary = photometric_comparison(
        reference, test, input=inp, detection_threshold=args.detection_threshold,
        min_area=args.min_area, aperture_radius=args.aperture_radius,
        match_radius=args.match_radius, threshold=args.threshold, match=args.match,
        **kwargs)
    print(_format_summary(summary))
    if args.threshold == "self":
        print(_THRESHOLD_HINT)
    if args.table is not None:
        table.write(args.table, format="ascii.ecsv", overwrite=args.overwrite)
        print(f"Wrote {args.table}")
    return 0


def add_models_command(subparsers):
    """Register ``astro-unet models``."""
    p = subparsers.add_parser(
        "models", help="list, download or verify the registered models",
        description="Registered models live in astropy's download cache (package "
                    "astro_unet). Without options, list them.")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--list", action="store_true", help="list the registered models (default)")
    group.add_argument("--download", metavar="NAME", default=None,
                       help="download NAME into the cache (even if astropy's "
                            "allow_internet is off)")
    group.add_argument("--verify", metavar="NAME", default=None,
                       help="check the cached copy of NAME against its sha256")
    p.set_defaults(func=_run_models)
    return p


def _cache_dir():
    try:
        from astropy.config.paths import get_cache_dir_path
    except ImportError:  # pragma: no cover - astropy < 8
        return None
    from .weights import PKGNAME

    return get_cache_dir_path(PKGNAME, ensure_exists=False) / "download"


def _run_models(args):
    from .weights import get_model_path, list_models, verify_model

    if args.download is not None:
        path = get_model_path(args.download, allow_internet=True)
        print(f"{args.download}: {path}")
        return 0
    if args.verify is not None:
        if verify_model(args.verify):
            print(f"{args.verify}: OK (sha256 matches)")
            return 0
        print(f"{args.verify}: sha256 MISMATCH; the cached copy was removed, download it "
              f"again with 'astro-unet models --download {args.verify}'")
        return 1
    table = list_models()
    if len(table) == 0:
        print("No models are registered yet: pass a model file with --model PATH "
              "(astro_unet.load_model(path)).")
    else:
        for line in table.pformat(max_lines=-1, max_width=-1):
            print(line)
    cache = _cache_dir()
    if cache is not None:
        print(f"Cache: {cache}")
    return 0


def add_demo_command(subparsers):
    """Register ``astro-unet demo``."""
    p = subparsers.add_parser(
        "demo", help="simulate, denoise and compare the bundled HST sample image",
        description="The main job on the bundled HST WFC3/UVIS F555W sample: simulate an "
                    "exposure RATIO times shorter, denoise it back with the model, and "
                    "compare the photometry of both against the original image.")
    p.add_argument("--ratio", "-r", type=float, default=2.0,
                   help="exposure-time ratio to simulate and undo (default 2)")
    p.add_argument("--model", default="default", help="model name or file (default: default)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated noise")
    p.add_argument("--output-dir", default="astro_unet_demo",
                   help="folder for the FITS files written (default ./astro_unet_demo)")
    p.add_argument("--overwrite", action="store_true", help="replace existing demo files")
    p.set_defaults(func=_run_demo)
    return p


def _meta_value(meta, key):
    """A metadata value, whether stored plain (Header) or as (value, comment)."""
    value = meta[key]
    return value[0] if isinstance(value, tuple) else value


def _run_demo(args):
    from .denoise import denoise_ccd
    from .photometry import photometric_comparison
    from .sample_data import load_sample_image
    from .simulate import simulate_short_exposure

    long = load_sample_image()
    short = simulate_short_exposure(long, args.ratio, detector="wfc3_uvis", seed=args.seed)
    names = {"long": "sample_long.fits", "short": f"sample_short_r{args.ratio:g}.fits",
             "denoised": f"sample_denoised_r{args.ratio:g}.fits"}
    paths = {k: os.path.join(args.output_dir, v) for k, v in names.items()}
    os.makedirs(args.output_dir, exist_ok=True)
    for path in paths.values():
        check_output(path, args.overwrite)
    print(f"Sample: HST WFC3/UVIS F555W, {long.shape[1]}x{long.shape[0]} px, "
          f"EXPTIME {long.meta['EXPTIME']:g} s (the 'long' exposure)")
    print(f"Simulated an exposure {args.ratio:g} times shorter "
          f"(EXPTIME {short.meta['EXPTIME']:g} s, seed {args.seed}).")
    denoised = denoise_ccd(short, ratio=args.ratio, model=args.model, device=args.device)
    mean = denoise_ccd(short, ratio=args.ratio, model=args.model, device=args.device,
                       estimate="mean")
    print(f"Denoised with model {_meta_value(denoised.meta, 'DNMODEL')!r} "
          f"on {_meta_value(denoised.meta, 'DNDEVICE')}.")
    long.write(paths["long"], overwrite=True)
    short.write(paths["short"], overwrite=True)
    denoised.write(paths["denoised"], overwrite=True)

    rows = []
    for label, test in (("short (noisy input)", short), ("denoised", denoised),
                        ("mean estimate", mean)):
        _, summary = photometric_comparison(long, test, input=short, threshold="reference")
        rows.append((label, summary))
    unit = u.Unit(long.unit).to_string()
    n_ref = rows[0][1]["n_reference"]
    long_rms = rows[0][1]["background_rms_ref"]
    print()
    print("Photometry against the original (the paper's settings: 7 sigma, 10 px, "
          "aperture diameter 10 px;")
    print(f"every image thresholded at the original's level; the original has {n_ref} "
          "detections):")
    print(_demo_table(rows, _DEMO_COLUMNS))
    print()
    for line in _DEMO_LEGEND:
        print(line.format(n_ref=n_ref, ratio=args.ratio, rm1=args.ratio - 1, unit=unit,
                          long_rms=_short_number(_value_of(long_rms))))
    print()
    print("Wrote " + ", ".join(paths.values()))
    return 0


#: Columns of the demo table: (summary key, heading).
_DEMO_COLUMNS = [("n_test", "detections"), ("tpr", "TPR"), ("precision", "precision"),
                 ("f_measure", "F-measure"), ("rfe_mean", "RFE [%]"),
                 ("snr_gain", "SNR gain"), ("background_rms_test", "bkg rms")]

#: What each number of the demo means (every printed number is explained).
_DEMO_LEGEND = [
    "denoised    the default output (estimate='extended'): the expected exposure "
    "{ratio:g} times longer that begins with the input, (input + {rm1:g} x network "
    "estimate) / {ratio:g}",
    "mean estimate  estimate='mean': the network's noise-free estimate alone (its "
    "background is far quieter than any real exposure; not written to a file)",
    "detections  sources found in the image",
    "TPR         fraction of the original's {n_ref} sources found again (true-positive rate)",
    "precision   fraction of the detections that are sources of the original",
    "F-measure   2 TPR precision / (TPR + precision): 1 is perfect",
    "RFE [%]     mean |flux - original flux| / original flux of the matched sources",
    "SNR gain    mean ratio of each source's signal-to-noise ratio to its value in the "
    "noisy input (about 1 for the input itself)",
    "bkg rms     median background noise in {unit}; the original, a real exposure "
    "{ratio:g} times longer than the input, has {long_rms}",
    "PSNR and SSIM are not shown: on star fields both are set by the few brightest "
    "star cores (astro_unet.psnr, astro_unet.ssim).",
]


def _value_of(value):
    return value.value if isinstance(value, u.Quantity) else value


def _short_number(value):
    """Three significant digits for floats (the demo's table), as `_format_value` otherwise."""
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        return f"{float(value):.3g}"
    return _format_value(value)


def _demo_table(rows, columns):
    """The demo's summary rows as an aligned text table."""
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{name:>10}" for _, name in columns)]
    for label, summary in rows:
        cells = (_short_number(_value_of(summary.get(key))) for key, _ in columns)
        lines.append(f"{label:<{width}}  " + "  ".join(f"{cell:>10}" for cell in cells))
    return "\n".join(lines)


#: Functions that add a subcommand: each takes the ``subparsers`` object of
#: the main parser, adds its parser with ``set_defaults(func=handler)`` where
#: ``handler(args) -> exit code``, and returns it.  Append to this list (e.g.
#: the training subcommand) to extend the command.
def add_train_command(subparsers):
    """Register ``astro-unet train`` (defined in `astro_unet.training.cli`)."""
    from .training.cli import add_train_command as add

    return add(subparsers)


SUBCOMMANDS = [add_denoise_command, add_simulate_command, add_compare_command,
               add_models_command, add_demo_command, add_train_command]


def build_parser():
    """
    The `argparse.ArgumentParser` of ``astro-unet`` with every subcommand of `SUBCOMMANDS`.

    Returns
    -------
    parser : `argparse.ArgumentParser`

    Examples
    --------
    >>> from astro_unet.cli import build_parser
    >>> args = build_parser().parse_args(["denoise", "in.fits", "--ratio", "2", "--hdu", "SCI,1"])
    >>> args.command, args.ratio, args.hdu, args.output
    ('denoise', 2.0, ('SCI', 1), None)
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Denoise astronomical images with exposure-time-conditioned U-nets "
                    "(Vojtekova et al. 2021).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when a command fails")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add in SUBCOMMANDS:
        sub = add(subparsers)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the full traceback when the command fails")
    return parser


#: Keyword arguments of the library -> (flag, metavar) of the command line, so
#: that an error raised in the library's words names the flag to change.
_FLAGS = {
    "exposure_time": ("--exptime", "S"), "gain": ("--gain", "G"),
    "read_noise": ("--read-noise", "E"), "dark_current": ("--dark-current", "D"),
    "sky": ("--sky", "SKY"), "detector": ("--detector", "NAME"), "seed": ("--seed", "N"),
    "ratio": ("--ratio", "R"), "tile_size": ("--tile-size", "N"),
    "overlap": ("--overlap", "N"), "batch_size": ("--batch-size", "N"),
    "device": ("--device", "DEVICE"), "mode": ("--mode", "MODE"),
    "model": ("--model", "NAME_OR_PATH"), "unit": ("--unit", "UNIT"),
    "estimate": ("--estimate", "ESTIMATE"), "saturation": ("--saturation", "LEVEL"),
    "extrapolate": ("--extrapolate", None),   # a switch: no value
    "overwrite": ("--overwrite", None),
}
_KEYWORD = "|".join(sorted(_FLAGS, key=len, reverse=True))
# ``gain=...`` / ``device='cuda'`` / ``dark_current=0``: the keyword with a value
# (not inside a Python call shown as an example: ``denoise_ccd(ccd, ratio=2)``)
_KEYWORD_VALUE = re.compile(rf"(?<![\w.'\"(-])(?<!, )({_KEYWORD})=(?:\.\.\.|'([^']*)'|\"([^\"]*)\"|"
                            r"([\w.+-]+))")
# ``gain must be ...``, ``ratio is required``: the keyword as the subject
_KEYWORD_SUBJECT = re.compile(rf"(?<![\w.'\"-])({_KEYWORD})(?= (?:must|is required)\b)")


def _flag_words(message):
    """
    ``message`` (of a library error) with the keyword arguments it names
    replaced by the command's flags: ``pass gain=... (electron / adu)`` ->
    ``pass --gain G (electron / adu)``, ``exposure_time must be`` ->
    ``--exptime must be``.
    """
    def value(match):
        flag, metavar = _FLAGS[match[1]]
        if metavar is None:
            return flag
        given = next((g for g in match.groups()[1:] if g is not None), None)
        return f"{flag} {metavar if given is None else given}"

    message = _KEYWORD_VALUE.sub(value, message)
    message = _KEYWORD_SUBJECT.sub(lambda m: _FLAGS[m[1]][0], message)
    return message.replace("(seconds or a Quantity)", "(seconds)")


#: Exceptions that are the user's to fix: reported without the exception type.
_USER_ERRORS = (CommandError, ValueError, TypeError, OSError, KeyError, u.UnitsError)


def main(argv=None):
    """
    Run ``astro-unet`` with the arguments ``argv`` (default: ``sys.argv[1:]``).

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments without the program name.

    Returns
    -------
    status : int
        0 on success, 1 when the command failed (one ``astro-unet: error:``
        line on stderr), 2 for a usage error.

    Examples
    --------
    >>> from astro_unet.cli import main
    >>> main(["models", "--verify", "no-such-model"])  # prints the reason on stderr
    1
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            traceback.print_exc()
        message = _flag_words(error_message(err))
        if not isinstance(err, _USER_ERRORS):
            message = f"{type(err).__name__}: {message}"
            if not args.debug:
                message += " (rerun with --debug for the traceback)"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
