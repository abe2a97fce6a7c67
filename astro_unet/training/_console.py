# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Console output of a training run: messages and the progress bar, on stderr.

The one mechanism the training code uses to talk to its user.  Standard
output stays free for the command's result (the model file's path), and a
message written while a progress bar runs goes through the bar so that the
two do not garble each other.
"""

import sys

from .. import _progress

__all__ = []  # private module: public names for the training modules

#: Prefix of the messages of `message`.
PREFIX = "astro_unet.training: "

# the tqdm bar of the running ProgressBar, if any (messages are written through it)
_active = None


def write(text):
    """
    Write one line to stderr, through the running progress bar if there is one.

    Parameters
    ----------
    text : str
        The line (without the newline).
    """
    if _active is not None:
        _active.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


def message(text, rank=0):
    """
    Write a message of the training run, prefixed ``astro_unet.training:``.

    Parameters
    ----------
    text : str
        The message.
    rank : int, optional
        The process's rank: only rank 0 writes.
    """
    if rank == 0:
        write(PREFIX + text)


class ProgressBar(_progress.ProgressBar):
    """
    The progress bar of the optimisation steps: tqdm, or nothing without tqdm.

    Parameters
    ----------
    total : int
        Number of steps of the run.
    initial : int
        Step to start from (a resumed run).
    enabled : bool
        False: no bar and no lines (other ranks, ``progress=False``).
    """

    def __init__(self, total, initial, enabled):
        global _active

        super().__init__(total, enabled, "astro_unet train", unit="step", initial=initial,
                         simple=False, dynamic_ncols=True)
        if self.bar is not None:
            _active = self.bar

    def line(self, text):
        """Write a line of progress (when enabled), through the bar."""
        if self.enabled:
            write(text)

    def close(self):
        """Close the bar (again: no effect)."""
        global _active

        if self.bar is not None and _active is self.bar:
            _active = None
        super().close()
