# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""`astro_unet.fitsio`: FITS in and out, with errors in the library's words."""

import ast
from pathlib import Path

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits

import astro_unet
from astro_unet import fitsio


def test_default_output_name():
    assert fitsio.default_output("/d/img.fits", "_denoised") == "/d/img_denoised.fits"
    assert fitsio.default_output("img.FITS.gz", "_x") == "img_x.FITS.gz"


def test_errors_speak_the_library_words(tmp_path):
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.ones((4, 4), np.float32)).writeto(plain)
    with pytest.raises(u.UnitsError, match=r"has no BUNIT keyword: pass the image unit with "
                                           r"unit=\.\.\.") as info:
        fitsio.read_ccd(plain)
    assert isinstance(info.value, fitsio.FITSFileError) and "--" not in str(info.value)
    ccd, index = fitsio.read_ccd(plain, unit="electron")
    assert index == 0 and ccd.unit == u.electron
    with pytest.raises(fitsio.FITSFileError, match="has no HDU 3"):
        fitsio.read_ccd(plain, hdu=3, unit="electron")
    with pytest.raises(FileNotFoundError, match="no such file"):
        fitsio.read_ccd(tmp_path / "missing.fits")
    with pytest.raises(FileExistsError, match=r"exists: pass overwrite=True to replace it"):
        fitsio.check_output(plain, overwrite=False)
    with pytest.raises(FileExistsError, match=r"exists: pass overwrite=True to replace it"):
        fitsio.write_like(plain, 0, ccd, ccd, plain, overwrite=False, unit_given=False)


def test_no_library_module_imports_the_cli():
    """Imports run one way: only the command (and its entry point) import `astro_unet.cli`."""
    root = Path(astro_unet.__file__).resolve().parent
    offenders = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if relative.parts[0] == "tests" or relative.name in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    package = ("astro_unet",) + relative.parent.parts
                    package = package[:len(package) - node.level + 1]
                    module = ".".join(package + ((module,) if module else ()))
                absolute = module
                if absolute == "astro_unet.cli" or absolute.startswith("astro_unet.cli."):
                    offenders.append(str(relative))
            elif isinstance(node, ast.Import):
                if any(a.name.startswith("astro_unet.cli") for a in node.names):
                    offenders.append(str(relative))
    assert offenders == []
