# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The documented builds work offline (issue 11: ``tox -e build_docs`` hung).

Source tree only: an installed package has no tox.ini.
"""

import configparser
import re
from pathlib import Path

import pytest

import astro_unet

ROOT = Path(astro_unet.__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not (ROOT / "tox.ini").is_file(), reason="not a source tree")


def tox():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    return parser


def test_tox_needs_no_extra_index():
    text = (ROOT / "tox.ini").read_text()
    assert "PIP_EXTRA_INDEX_URL" not in text and "download.pytorch.org" not in text
    assert "--extra-index-url" not in text and "--index-url" not in text


def test_build_docs_is_the_offline_ci_build():
    env = tox()["testenv:build_docs"]
    command = env["commands"].strip()
    assert "-D disable_intersphinx=1" in command and command.startswith("sphinx-build -W")
    extras = set(env["extras"].split())
    assert "all" not in extras  # would pull the benchmark packages (bm3d)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "disable_intersphinx=1" in ci
    # the extras CI installs cover what the docs build needs here
    ci_extras = set(re.search(r'-e "\.\[([a-z,]+)\]"', ci)[1].split(","))
    assert extras <= ci_extras | {"train"}


def test_tox_pins_the_torch_that_ci_installs():
    ci_pin = re.search(r'pip install "(torch==[0-9.]+)"', (ROOT / ".ci" / "run").read_text())[1]
    deps = tox()["testenv"]["deps"]
    assert f"{{env:ASTRO_UNET_TORCH:{ci_pin}}}" in deps
