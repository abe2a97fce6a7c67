# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The package's one progress bar, on stderr: tqdm where installed, else a simple one.

Used by the tile loop (`astro_unet.tiling.blend_tiles`) and by the training
loop (`astro_unet.training._console`).
"""

import sys
import time

__all__ = []  # private module: public names for astro_unet's own modules


class ProgressBar:
    """
    Progress of a loop on stderr.

    * tqdm installed: a tqdm bar (``tqdm.auto``);
    * otherwise, stderr a terminal: one line redrawn in place
      (``astro_unet tiles: [#######.......] 12/25 tiles (48 %, 3.1 s)``);
    * otherwise (a log file, a pipe): a line at every tenth of the total.

    Parameters
    ----------
    total : int
        Number of units of work.
    enabled : bool
        False: no bar and no lines.
    desc : str
        Description shown before the bar.
    unit : str
        Name of one unit of work (``"tile"``, ``"step"``).
    initial : int
        Units already done (a resumed run).
    simple : bool
        Without tqdm, draw the simple bar (False: show nothing).
    **tqdm_kwargs
        Passed to tqdm.
    """

    width = 30

    def __init__(self, total, enabled, desc, *, unit="tile", initial=0, simple=True,
                 **tqdm_kwargs):
        self.total, self.done, self.bar = total, initial, None
        self.enabled, self.simple = enabled, simple
        self.desc, self.unit = desc, unit
        self.start = time.perf_counter()
        self.next_report = 0.1
        self.stream = sys.stderr
        self.in_place = False
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            kwargs = dict(total=total, desc=desc, unit=unit, **tqdm_kwargs)
            if initial:
                kwargs["initial"] = initial
            self.bar = tqdm(**kwargs)
            return
        if not simple:
            return
        isatty = getattr(self.stream, "isatty", None)
        self.in_place = bool(isatty is not None and isatty())
        if self.in_place:
            self._draw()

    def _status(self):
        elapsed = time.perf_counter() - self.start
        return (f"{self.done}/{self.total} {self.unit}s "
                f"({100 * self.done / max(self.total, 1):.0f} %, {elapsed:.1f} s)")

    def _draw(self):
        filled = int(self.width * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.desc}: [{bar}] {self._status()}")
        self.stream.flush()

    def update(self, n, **postfix):
        """Advance by ``n`` units; tqdm shows ``postfix`` (e.g. the loss)."""
        self.done += n
        if not self.enabled or (self.bar is None and not self.simple):
            return
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
        elif self.in_place:
            self._draw()
        elif self.done / self.total >= self.next_report or self.done == self.total:
            print(f"{self.desc}: {self._status()}", file=self.stream)
            while self.next_report <= self.done / self.total:
                self.next_report += 0.1

    def close(self):
        """Close the bar (again: no effect)."""
        if self.bar is not None:
            self.bar.close()
        elif self.in_place:
            self.stream.write("\n")
            self.stream.flush()
            self.in_place = False
