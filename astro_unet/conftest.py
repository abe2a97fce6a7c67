# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""pytest configuration: the pytest-astropy header and test isolation."""

import os

import pytest

try:
    from pytest_astropy_header.display import PYTEST_HEADER_MODULES, TESTED_VERSIONS
except ImportError:  # pragma: no cover
    PYTEST_HEADER_MODULES = {}
    TESTED_VERSIONS = {}

os.environ.setdefault("MPLBACKEND", "agg")


def pytest_configure(config):
    config.option.astropy_header = True
    for name in ("Pandas", "h5py"):
        PYTEST_HEADER_MODULES.pop(name, None)
    PYTEST_HEADER_MODULES.update(
        {
            "torch": "torch",
            "astroscrappy": "astroscrappy",
            "photutils": "photutils",
            "ccdproc": "ccdproc",
            "reproject": "reproject",
            "scikit-image": "skimage",
        }
    )
    from astro_unet import __version__

    TESTED_VERSIONS["astro_unet"] = __version__


@pytest.fixture(autouse=True)
def _isolated_astropy_cache(tmp_path_factory, monkeypatch):
    """
    Never let a test read or write the user's download caches.

    ``set_temp_cache`` only redirects astropy's own cache; the package's
    weights live under ``pkgname="astro_unet"``, redirected with
    ``temporary_cache_dir_path`` (astropy >= 8) or, before that, through
    ``XDG_CACHE_HOME``.
    """
    from astropy.config import paths

    cache = tmp_path_factory.mktemp("astropy_cache")
    with paths.set_temp_cache(cache):
        if hasattr(paths, "temporary_cache_dir_path"):
            with paths.temporary_cache_dir_path(cache, namespace="astro_unet", delete=False):
                yield
        else:  # pragma: no cover - astropy < 8
            xdg = tmp_path_factory.mktemp("xdg_cache")
            (xdg / "astro_unet").mkdir()
            monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
            yield
