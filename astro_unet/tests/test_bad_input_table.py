# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The tables of ``docs/bad_input.rst`` ("What happens with bad input") are true.

Every row is run: its call (Python) or command (``astro-unet``) must give
the outcome the page shows -- the exception (or exit status, or warning)
and its message, where ``...`` in the page stands for any text.  The images
come from the page's own setup code.  Source tree only (an installed
package has no docs folder).
"""

import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

import astro_unet
from astro_unet.cli import main

PAGE = Path(astro_unet.__file__).resolve().parent.parent / "docs" / "bad_input.rst"

pytestmark = pytest.mark.skipif(not PAGE.is_file(), reason="not a source tree")

EXCEPTIONS = {"ValueError": ValueError, "TypeError": TypeError, "UnitsError": u.UnitsError,
              "RuntimeError": RuntimeError, "AstropyUserWarning": AstropyUserWarning}


def _sections():
    text = PAGE.read_text(encoding="utf-8")
    python_part, cli_part = text.split("On the command line", 1)
    cli_part = cli_part.split("Other situations", 1)[0]
    return python_part, cli_part


def _rows(part):
    """The body rows of the list-table in ``part``: lists of cell texts."""
    table = part[part.index(".. list-table::"):]
    rows = []
    for chunk in re.split(r"^   \* - ", table, flags=re.M)[1:]:
        cells = re.split(r"^     - ", chunk, flags=re.M)
        rows.append([" ".join(cell.split()) for cell in cells])
    header, body = rows[0], rows[1:]
    assert header[:2] == ["Input", "Call"] or header[:2] == ["Input", "Command"]
    return body


def _literals(cell):
    return re.findall(r"``(.+?)``(?!`)", cell)


def _matches(pattern, message):
    """``message`` matches ``pattern``, where ``...`` is any text (also at the ends)."""
    message = " ".join(message.split())
    regex = ".*?".join(re.escape(part) for part in pattern.split("..."))
    return re.fullmatch(regex, message, flags=re.S) is not None


def _setup_code(part):
    block = part.split(".. code-block:: python", 1)[1].split(".. list-table::", 1)[0]
    return "\n".join(line[4:] for line in block.splitlines())


def _python_cases():
    part, _ = _sections()
    return [pytest.param(row, id=row[0]) for row in _rows(part)]


def _cli_cases():
    _, part = _sections()
    return [pytest.param(row, id=row[0]) for row in _rows(part)]


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_input")
    part, _ = _sections()
    ns = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        exec(compile(_setup_code(part), str(PAGE), "exec"), ns)
    return folder, ns


def _needs_cuda_absent(text):
    if "cuda" in text:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")


def test_page_lists_the_issue_cases():
    python_part, cli_part = _sections()
    assert len(_rows(python_part)) >= 20 and len(_rows(cli_part)) >= 10


@pytest.mark.parametrize("row", _python_cases())
def test_python_row(row, namespace, monkeypatch):
    folder, ns = namespace
    _, call_cell, outcome = row
    (call,) = _literals(call_cell)
    kind, message = _literals(outcome)
    _needs_cuda_absent(call)
    monkeypatch.chdir(folder)
    before = {name: (np.array(obj.data, copy=True), repr(obj.meta))
              for name, obj in ns.items() if hasattr(obj, "data") and hasattr(obj, "meta")}
    if outcome.startswith("returns"):
        with pytest.warns(EXCEPTIONS[kind]) as caught:
            result = eval(call, ns)
        assert result is not None
        assert any(_matches(message, str(w.message)) for w in caught), \
            [str(w.message) for w in caught]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(EXCEPTIONS[kind]) as err:
                eval(call, ns)
        assert type(err.value).__name__ == kind or kind == "UnitsError"
        assert _matches(message, str(err.value)), str(err.value)
    for name, (data, meta) in before.items():  # inputs never modified
        np.testing.assert_array_equal(ns[name].data, data)
        assert repr(ns[name].meta) == meta


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_input_cli")
    rng = np.random.default_rng(1)
    data = rng.poisson(100.0, (64, 64)).astype(np.float32)
    fits.PrimaryHDU(data, header=fits.Header({"BUNIT": "electron", "EXPTIME": 100.0})
                    ).writeto(folder / "short.fits")
    fits.PrimaryHDU(data).writeto(folder / "plain.fits")
    raw = (folder / "short.fits").read_bytes()
    (folder / "cut.fits").write_bytes(raw[:-2000])
    (folder / "empty.fits").write_bytes(b"")
    return folder


@pytest.mark.parametrize("row", _cli_cases())
def test_command_line_row(row, files, monkeypatch, capsys):
    _, command_cell, outcome = row
    (command,) = _literals(command_cell)
    kind, message = _literals(outcome)
    _needs_cuda_absent(command)
    monkeypatch.chdir(files)
    before = {p.name: p.read_bytes() for p in files.iterdir()}
    argv = shlex.split(command)
    assert argv[0] == "astro-unet"
    code = main(argv[1:])
    err = capsys.readouterr().err.strip()
    assert f"exit {code}" == kind, err
    assert len(err.splitlines()) == 1, err
    assert _matches(message, err), err
    assert {p.name: p.read_bytes() for p in files.iterdir()} == before  # nothing written
