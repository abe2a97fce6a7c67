# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The README's examples run (issue 11: its example could not run).

The ``pycon`` block is a doctest on the bundled sample; the ``python`` block
(your own raw exposure) runs on a small simulated ``my_flc.fits``.  Only in a
source tree: an installed package has no README.
"""

import doctest
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import astro_unet

README = Path(astro_unet.__file__).resolve().parent.parent / "README.md"

pytestmark = pytest.mark.skipif(not README.is_file(), reason="not a source tree")


def blocks(language):
    text = README.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_example_is_a_passing_doctest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (example,) = blocks("pycon")
    test = doctest.DocTestParser().get_doctest(example, {}, "README.md", str(README), 0)
    assert len(test.examples) >= 8
    names = {name for ex in test.examples
             for name in re.findall(r"\b(\w+)\(", ex.source)}
    assert {"load_sample_image", "denoise_ccd", "photometric_comparison"} <= names
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=print)
    assert result.failed == 0
    assert (tmp_path / "sample_denoised.fits").is_file()


def _my_flc(path):
    """A single raw WFC3/UVIS-like exposure: sky, stars, read noise, cosmic rays."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[:96, :96]
    expected = np.full((96, 96), 80.0)
    for y, x, flux in ((30.2, 40.7, 8e3), (60.5, 20.1, 3e3), (70.0, 75.3, 2e4)):
        expected += flux / (2 * np.pi * 1.2 ** 2) * np.exp(
            -((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.2 ** 2))
    data = rng.poisson(expected) + rng.normal(0, 3.1, expected.shape)
    data[10, 12] += 3000.0
    data[50, 80:82] += 2000.0
    primary = fits.PrimaryHDU(header=fits.Header({"EXPTIME": 400.0, "INSTRUME": "WFC3"}))
    sci = fits.ImageHDU(data.astype(np.float32), name="SCI",
                        header=fits.Header({"BUNIT": "ELECTRONS"}))
    fits.HDUList([primary, sci]).writeto(path)


def test_readme_own_data_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _my_flc(tmp_path / "my_flc.fits")
    (code,) = blocks("python")
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    better = namespace["better"]
    assert better.meta["EXPTIME"] == 800.0 and better.meta["CRNPIX"] >= 3
    assert (tmp_path / "my_denoised.fits").is_file()
