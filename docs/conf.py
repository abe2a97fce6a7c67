# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Sphinx configuration for astro_unet (sphinx-astropy v2 defaults)."""

import datetime
import os
import sys
from importlib import metadata

from sphinx_astropy.conf.v2 import *  # noqa: F401,F403
from sphinx_astropy.conf.v2 import exclude_patterns, extensions, intersphinx_mapping

sys.path.insert(0, os.path.abspath("."))

project = "astro_unet"
author = "astro_unet developers"
copyright = f"{datetime.datetime.now().year}, {author}"
try:
    release = metadata.version("astro_unet")
except metadata.PackageNotFoundError:  # pragma: no cover
    release = "0.0.0"
version = ".".join(release.split(".")[:2])

intersphinx_mapping.update(
    {
        "ccdproc": ("https://ccdproc.readthedocs.io/en/stable/", None),
        "photutils": ("https://photutils.readthedocs.io/en/stable/", None),
        "reproject": ("https://reproject.readthedocs.io/en/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "dask": ("https://docs.dask.org/en/stable/", None),
    }
)
intersphinx_mapping.pop("h5py", None)

exclude_patterns += ["_templates", "sg_execution_times.rst", "examples/*.rst"]

html_theme_options = {
    "github_url": "https://github.com/astro-unet/astro_unet",
    "use_edit_page_button": False,
}
html_title = f"{project} v{release}"
html_static_path = []

# numpydoc: do not list every class member twice
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

# Offline builds (CI has no network): ``-D disable_intersphinx=1`` is provided
# by sphinx_astropy.ext.intersphinx_toggle.
nitpicky = False

# Gallery (sphinx-gallery), built when the examples folder exists.  Every
# example must run in under a minute on a laptop CPU; the build fails when one
# raises.
if os.path.isdir(os.path.join(os.path.dirname(__file__), "examples")):
    extensions += ["sphinx_gallery.gen_gallery"]
    sphinx_gallery_conf = {
        "examples_dirs": "examples",
        "gallery_dirs": "auto_examples",
        "filename_pattern": r"/plot_",
        "within_subsection_order": "_gallery_order.ExampleOrder",
        "download_all_examples": False,
        "remove_config_comments": True,
        "matplotlib_animations": False,
        "min_reported_time": 0,
        "capture_repr": (),
    }
