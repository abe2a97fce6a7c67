# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of `astro_unet._utils`: atomic writes with the user's permissions (issue 11)."""

import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits

from astro_unet import _utils
from astro_unet._utils import TEMP_PREFIX, atomic_output, remove_stale_temporaries


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def plain_open_mode(tmp_path):
    """The mode ``open(path, "w")`` gives a new file under the current umask."""
    probe = tmp_path / "probe.txt"
    probe.write_text("x")
    try:
        return mode(probe)
    finally:
        probe.unlink()


def test_new_file_gets_the_mode_of_open(tmp_path, umask_022):
    out = tmp_path / "out.fits"
    with atomic_output(out) as tmp:
        assert os.path.basename(tmp).startswith(TEMP_PREFIX)
        assert tmp.endswith("-out.fits")  # same ending: .gz outputs stay compressed
        fits.PrimaryHDU(np.zeros((2, 2))).writeto(tmp, overwrite=True)
    assert mode(out) == 0o644 == plain_open_mode(tmp_path)  # mkstemp gave 0o600
    assert os.listdir(tmp_path) == ["out.fits"]


def test_other_umask_and_replaced_file_keeps_its_mode(tmp_path):
    old = os.umask(0o077)
    try:
        out = tmp_path / "a.txt"
        with atomic_output(out) as tmp:
            with open(tmp, "w") as f:
                f.write("1")
        assert mode(out) == 0o600
    finally:
        os.umask(old)
    os.chmod(out, 0o640)
    with atomic_output(out) as tmp:
        with open(tmp, "w") as f:
            f.write("2")
    assert out.read_text() == "2" and mode(out) == 0o640


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "b.fits"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(out) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_killed_writes_are_removed(tmp_path):
    out = tmp_path / "c.fits"
    host = _utils._host_tag()
    dead = tmp_path / f"{TEMP_PREFIX}{host}-{_dead_pid()}-0123abcd-c.fits"
    alive = tmp_path / f"{TEMP_PREFIX}{host}-{os.getppid()}-0123abcd-c.fits"
    other_output = tmp_path / f"{TEMP_PREFIX}{host}-{_dead_pid()}-0123abcd-d.fits"
    legacy_old = tmp_path / f"{TEMP_PREFIX}k2j_x9aq-c.fits"       # mkstemp name
    legacy_new = tmp_path / f"{TEMP_PREFIX}p0q1r2s3-c.fits"
    other_host_old = tmp_path / f"{TEMP_PREFIX}ffffff-1-0123abcd-c.fits"
    for path in (dead, alive, other_output, legacy_old, legacy_new, other_host_old):
        path.write_bytes(b"partial")
    past = time.time() - _utils.STALE_SECONDS - 60
    for path in (legacy_old, other_host_old):
        os.utime(path, (past, past))
    removed = remove_stale_temporaries(out)
    assert sorted(removed) == sorted(str(p) for p in (dead, legacy_old, other_host_old))
    assert alive.exists() and other_output.exists() and legacy_new.exists()
    # a write removes them too
    dead.write_bytes(b"partial")
    with atomic_output(out) as tmp:
        open(tmp, "wb").close()
    assert not dead.exists() and out.exists()


def test_sigkilled_write_is_cleaned_by_the_rerun(tmp_path):
    # issue 11: a SIGKILL during a write left a hidden .astro-unet-*.fits file
    # that no rerun removed
    out = tmp_path / "e.fits"
    code = (f"from astro_unet._utils import atomic_output\n"
            f"import os, signal\n"
            f"with atomic_output({str(out)!r}) as tmp:\n"
            f"    open(tmp, 'wb').write(b'half')\n"
            f"    os.kill(os.getpid(), signal.SIGKILL)\n")
    here = os.path.dirname(os.path.dirname(_utils.__file__))  # this copy of the package
    run = subprocess.run([sys.executable, "-c", code], timeout=60,
                         env={**os.environ, "PYTHONPATH": here})
    assert run.returncode == -9
    left = [p for p in os.listdir(tmp_path) if p.startswith(TEMP_PREFIX)]
    assert len(left) == 1 and not out.exists()
    with atomic_output(out) as tmp:
        open(tmp, "wb").close()
    assert os.listdir(tmp_path) == ["e.fits"]
