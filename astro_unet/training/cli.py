# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Command line of the training loop.

``python -m astro_unet.training --config FILE [options]`` and, once
registered in `astro_unet.cli.SUBCOMMANDS`, ``astro-unet train --config FILE
[options]`` (same options).  Under ``torchrun`` every process runs the same
command::

    torchrun --nproc_per_node 4 -m astro_unet.training --config default

Nothing heavy is imported until a run starts.
"""

import argparse
import os

from ._console import message

__all__ = ["add_train_arguments", "add_train_command", "run_train", "main"]

DESCRIPTION = ("Train an Astro U-net as a TOML configuration says (see "
               "astro_unet.training.config) and export it as a model file.")


def add_train_arguments(parser):
    """
    Add the training options to an `argparse.ArgumentParser`.

    Parameters
    ----------
    parser : `argparse.ArgumentParser`

    Returns
    -------
    parser : `argparse.ArgumentParser`

    Examples
    --------
    >>> import argparse
    >>> from astro_unet.training.cli import add_train_arguments
    >>> p = add_train_arguments(argparse.ArgumentParser())
    >>> a = p.parse_args(["--config", "smoke", "--steps", "5", "--set", "optim.lr=1e-3"])
    >>> a.config, a.steps, a.set
    ('smoke', 5, ['optim.lr=1e-3'])
    """
    parser.add_argument("--config", "-c", required=True, metavar="FILE",
                        help="TOML configuration file, or a shipped one: default, paper, smoke")
    parser.add_argument("--resume", metavar="CKPT", default=None,
                        help="continue from a checkpoint file or run directory; 'auto': the "
                             "run directory's last.pt if it exists")
    parser.add_argument("--output", "-o", metavar="PATH", default=None,
                        help="model file to write (default: run.output or "
                             "<run_dir>/<name>.pt)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                        help="wall-clock budget in minutes: stop in time to checkpoint and "
                             "export (run.time_limit_minutes)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="total optimisation steps (optim.steps)")
    parser.add_argument("--device", default=None,
                        help="auto, cpu, cuda or cuda:N (run.device)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="directory of the real images (data.data_dir)")
    parser.add_argument("--run-dir", default=None, metavar="DIR",
                        help="directory of logs and checkpoints (run.run_dir)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (run.seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change any configuration value, e.g. --set optim.lr=3e-4 "
                             "(repeatable; values are TOML)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _overrides(args):
    items = list(args.set)
    simple = {"time_limit": "run.time_limit_minutes", "steps": "optim.steps",
              "device": "run.device", "data_dir": "data.data_dir", "run_dir": "run.run_dir",
              "seed": "run.seed"}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r} is not KEY=VALUE (e.g. optim.steps=100).")
    for attr, key in simple.items():
        value = getattr(args, attr)
        if value is not None:
            out[key] = value
    return items, out


def run_train(args):
    """
    Run a training from parsed arguments (the ``func`` of the subcommand).

    Parameters
    ----------
    args : `argparse.Namespace`
        From a parser with `add_train_arguments`.

    Returns
    -------
    status : int
        0 on success.
    """
    from .config import load_config
    from .loop import train

    items, simple = _overrides(args)
    config = load_config(args.config, overrides=items)
    if simple:
        config = config.replace(simple)
    path = train(config, resume=args.resume, output=args.output,
                 progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":
        print(path)
    return 0


def add_train_command(subparsers):
    """
    Register ``astro-unet train`` (for `astro_unet.cli.SUBCOMMANDS`).

    Parameters
    ----------
    subparsers
        The ``subparsers`` object of the main parser.

    Returns
    -------
    parser : `argparse.ArgumentParser`
    """
    p = subparsers.add_parser("train", help="train an Astro U-net model",
                              description=DESCRIPTION)
    add_train_arguments(p)
    p.set_defaults(func=run_train)
    return p


def main(argv=None):
    """
    ``python -m astro_unet.training``: train and export a model.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success, 1 on an error (one line on stderr), 2 on a usage error.
    """
    parser = add_train_arguments(argparse.ArgumentParser(
        prog="python -m astro_unet.training", description=DESCRIPTION))
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback when the run fails")
    args = parser.parse_args(argv)
    try:
        return run_train(args)
    except KeyboardInterrupt:
        message("interrupted")
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, FloatingPointError) as err:
        if args.debug:
            raise
        message(f"error: {err}")
        return 1
