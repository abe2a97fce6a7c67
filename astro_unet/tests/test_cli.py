# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of the ``astro-unet`` command (called through ``main(argv)``)."""

import collections
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.table import QTable, Table
from astropy.wcs import WCS
from numpy.testing import assert_allclose, assert_array_equal

import astro_unet
from astro_unet import _inference, cli, conf
from astro_unet.cli import build_parser, main
from astro_unet.fitsio import default_output
from astro_unet.weights import ModelInfo, register_model

# shared fixtures: an isolated astro_unet download cache, registry restore,
# a loopback HTTP server and a tiny model file
from .test_weights import (astro_unet_cache, clean_registry, http_server,  # noqa: F401
                           model_bytes)

SHAPE = (48, 40)
EXPTIME = 100.0


def tan_wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [20.0, 24.0]
    w.wcs.cdelt = [-0.04 / 3600, 0.04 / 3600]
    w.wcs.cunit = ["deg", "deg"]
    return w


def scene(seed=0, shape=SHAPE, sky=20.0, stars=((12.3, 15.1, 3000.0), (30.2, 33.7, 1500.0))):
    """A noisy image in electron/s-like numbers with a few Gaussian stars."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, sky)
    for x, y, f in stars:
        img += f / (2 * np.pi * 1.5**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    return (img + rng.normal(0, 1.0, shape)).astype(np.float32)


def write_mef(path, *, bunit="electron/s", data=None, with_uncert=False):
    """An HST-like file: empty primary with EXPTIME, SCI (WCS), ERR, DQ, a table."""
    primary = fits.PrimaryHDU()
    primary.header["EXPTIME"] = (EXPTIME, "exposure time (s)")
    primary.header["TELESCOP"] = "TEST"
    primary.header["RDNOISE"] = (3.0, "read noise (e-)")
    sci_header = tan_wcs().to_header()
    if bunit is not None:
        sci_header["BUNIT"] = bunit
    sci_header["MYKEY"] = ("kept", "a user keyword")
    sci = fits.ImageHDU(scene() if data is None else data, header=sci_header, name="SCI")
    err = fits.ImageHDU(np.full(SHAPE, 2.0, dtype=np.float32), name="ERR")
    dq = fits.ImageHDU(np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) % 3,
                       name="DQ")
    table = fits.BinTableHDU(Table({"a": [1, 2, 3], "b": ["x", "y", "z"]}), name="CAT")
    hdus = [primary, sci, err, dq, table]
    if with_uncert:
        unc = fits.ImageHDU(np.full(SHAPE, 1.5, dtype=np.float32), name="UNCERT")
        unc.header["UTYPE"] = "StdDevUncertainty"
        hdus.append(unc)
    fits.HDUList(hdus).writeto(path)
    return path


def assert_hdus_unchanged(before, after, skip=()):
    """Every HDU of ``before`` not in ``skip`` is in ``after`` with equal header and data."""
    with fits.open(before) as a, fits.open(after) as b:
        for index, hdu in enumerate(a):
            if index in skip or hdu.name in skip:
                continue
            other = b[index]
            assert other.name == hdu.name
            assert type(other) is type(hdu)
            for card in hdu.header.cards:
                assert other.header[card.keyword] == card.value, card.keyword
            if isinstance(hdu, fits.BinTableHDU):
                assert other.data.tolist() == hdu.data.tolist()
            elif hdu.data is not None:
                assert_array_equal(other.data, hdu.data)
                assert other.data.dtype == hdu.data.dtype
            else:
                assert other.data is None


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, match):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("astro-unet: error: ")
    assert match in lines[0], lines[0]
    assert "Traceback" not in err


# --------------------------------------------------------------------------
# general


def test_version(capsys):
    code, out, err = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"astro-unet {astro_unet.__version__}"


def test_python_dash_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "astro_unet", "--version"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"astro-unet {astro_unet.__version__}"


def test_no_command_is_a_usage_error(capsys):
    code, out, err = run(capsys)
    assert code == 2
    assert "required" in err and "usage: astro-unet" in err


def test_help(capsys):
    code, out, err = run(capsys, "denoise", "--help")
    assert code == 0
    assert "--ratio" in out and "--model" in out and "--tile-size" in out


@pytest.mark.parametrize("text, expected", [
    ("1", 1), ("sci", "SCI"), ("SCI,2", ("SCI", 2)), (" err , 1", ("ERR", 1)),
])
def test_hdu_argument(text, expected):
    args = build_parser().parse_args(["simulate", "a.fits", "-o", "b.fits", "--ratio", "2",
                                      "--hdu", text])
    assert args.hdu == expected


def test_number_and_sky_arguments():
    args = build_parser().parse_args(["simulate", "a.fits", "-o", "b.fits", "--ratio", "2",
                                      "--read-noise", "3.1", "--dark-current", "7 electron/h",
                                      "--sky", "HEADER"])
    assert args.read_noise == 3.1
    assert args.dark_current == 7 * u.electron / u.h
    assert args.sky == "header"
    args = build_parser().parse_args(["simulate", "a.fits", "-o", "b.fits", "--ratio", "2",
                                      "--sky", "0.5"])
    assert args.sky == 0.5 and args.read_noise is None


def test_bad_arguments_are_usage_errors(capsys, tmp_path):
    code, out, err = run(capsys, "simulate", "a.fits", "-o", "b.fits", "--ratio", "two")
    assert code == 2 and "invalid float value" in err
    code, out, err = run(capsys, "simulate", "a.fits", "-o", "b.fits", "--ratio", "2",
                         "--unit", "bananas")
    assert code == 2 and "unknown unit 'bananas'" in err
    code, out, err = run(capsys, "simulate", "a.fits", "-o", "b.fits", "--ratio", "2",
                         "--dark-current", "seven")
    assert code == 2 and "neither a number nor a quantity" in err


def test_unexpected_error_and_debug(capsys, tmp_path, monkeypatch):
    def boom(args):
        raise RuntimeError("boom")

    path = write_mef(tmp_path / "in.fits")
    monkeypatch.setattr(cli, "_run_models", boom)
    parser = build_parser()  # handlers are bound when the parser is built
    assert parser.parse_args(["models"]).func is boom
    code, out, err = run(capsys, "models")
    assert_one_line_error(code, err, "RuntimeError: boom (rerun with --debug")
    code, out, err = run(capsys, "--debug", "models")
    assert code == 1 and "Traceback" in err and "RuntimeError: boom" in err
    # --debug is accepted after the subcommand too, for library errors
    code, out, err = run(capsys, "simulate", path, "-o", tmp_path / "o.fits", "--ratio", "0.5",
                         "--debug")
    assert code == 1 and "Traceback" in err and "ratio must be a finite number > 1" in err


def test_default_output_name():
    assert default_output("/d/img.fits", "_denoised") == "/d/img_denoised.fits"
    assert default_output("img.FITS.gz", "_x") == "img_x.FITS.gz"
    assert default_output("img.fit", "_x") == "img_x.fit"
    assert default_output("img", "_x") == "img_x.fits"


def test_summary_formatting():
    text = cli._format_summary({"n_reference": 3, "tpr": 0.6666666666, "rfe": float("nan"),
                                "background_rms_ref": 1.25 * u.electron / u.s,
                                "threshold": "self", "nested": {"a": True}})
    lines = text.splitlines()
    assert lines[0] == "n_reference         3"
    assert lines[1] == "tpr                 0.666667"
    assert lines[2] == "rfe                 nan"
    assert lines[3] == "background_rms_ref  1.25 electron / s"
    assert lines[5] == "nested.a            True"
    # values all start in the same column
    assert len({line.index(line.split()[1]) for line in lines}) == 1


# --------------------------------------------------------------------------
# simulate


def test_simulate_keeps_file_structure(capsys, tmp_path):
    src = write_mef(tmp_path / "long.fits")
    out = tmp_path / "short.fits"
    code, stdout, err = run(capsys, "simulate", src, "-o", out, "--ratio", "4", "--seed", "3",
                            "--read-noise", "3.5", "--dark-current", "36 electron/h",
                            "--hdu", "SCI")
    assert code == 0, err
    assert str(out) in stdout
    assert_hdus_unchanged(src, out, skip=("SCI",))
    with fits.open(src) as a, fits.open(out) as b:
        assert [h.name for h in b] == [h.name for h in a] + ["UNCERT"]
        sci_in, sci_out = a["SCI"], b["SCI"]
        # the image changed, keeps its mean and gains noise
        assert sci_out.data.shape == SHAPE and sci_out.header["BITPIX"] == -32
        assert not np.array_equal(sci_out.data, sci_in.data)
        assert abs(np.mean(sci_out.data) - np.mean(sci_in.data)) < 0.5
        assert np.std(sci_out.data - sci_in.data) > 0.1
        # header: input keywords and WCS kept, the step recorded
        for key in ("MYKEY", "CRVAL1", "CRVAL2", "CRPIX1", "CDELT2", "CTYPE1", "BUNIT"):
            assert sci_out.header[key] == sci_in.header[key]
        assert sci_out.header["SIMRATIO"] == 4
        assert sci_out.header["SIMSEED"] == 3
        assert_allclose(sci_out.header["SIMDARK"], 0.01)
        assert sci_out.header["EXPTIME"] == EXPTIME / 4  # from the primary, updated here
        assert b[0].header["EXPTIME"] == EXPTIME  # primary untouched
        assert any("simulate_short_exposure" in str(h) for h in sci_out.header["HISTORY"])
        assert "TELESCOP" not in sci_out.header  # primary keywords are not copied
        assert b["UNCERT"].header["UTYPE"] == "StdDevUncertainty"
    ccd = CCDData.read(out, hdu="SCI")
    assert ccd.unit == u.electron / u.s
    assert isinstance(ccd.uncertainty, StdDevUncertainty)
    assert np.all(ccd.uncertainty.array > 0)
    assert WCS(fits.getheader(out, "SCI")).wcs.compare(WCS(fits.getheader(src, "SCI")).wcs)


def test_simulate_is_reproducible_and_default_hdu(capsys, tmp_path):
    src = write_mef(tmp_path / "long.fits")
    outs = []
    for name in ("a.fits", "b.fits"):
        code, _, err = run(capsys, "simulate", src, "-o", tmp_path / name, "--ratio", "2",
                           "--seed", "7")  # default HDU: the first with image data (SCI)
        assert code == 0, err
        outs.append(fits.getdata(tmp_path / name, "SCI"))
    assert_array_equal(*outs)


def test_simulate_primary_hdu_and_unit_option(capsys, tmp_path):
    src = tmp_path / "plain.fits"
    fits.PrimaryHDU(scene(), header=fits.Header({"EXPTIME": 50.0})).writeto(src)
    out = tmp_path / "out.fits"
    code, _, err = run(capsys, "simulate", src, "-o", out, "--ratio", "2", "--seed", "1",
                       "--read-noise", "3")
    assert_one_line_error(code, err, "has no BUNIT keyword: pass the image unit with --unit")
    assert not out.exists()
    code, _, err = run(capsys, "simulate", src, "-o", out, "--ratio", "2", "--seed", "1",
                       "--read-noise", "3", "--unit", "electron")
    assert code == 0, err
    with fits.open(out) as hdul:
        assert hdul[0].header["BUNIT"] == "electron"
        assert hdul[0].header["EXPTIME"] == 25.0
        assert [h.name for h in hdul] == ["PRIMARY", "UNCERT"]


def test_simulate_gzip_in_and_out(capsys, tmp_path):
    src = tmp_path / "img.fits.gz"
    fits.PrimaryHDU(scene(), header=fits.Header({"BUNIT": "electron", "RDNOISE": 3.0})
                    ).writeto(src)
    code, _, err = run(capsys, "simulate", src, "-o", tmp_path / "out.fits.gz", "--ratio", "2",
                       "--seed", "1")
    assert code == 0, err
    assert (tmp_path / "out.fits.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip magic
    assert fits.getheader(tmp_path / "out.fits.gz")["SIMRATIO"] == 2


def test_simulate_replaces_existing_uncert(capsys, tmp_path):
    src = write_mef(tmp_path / "long.fits", with_uncert=True)
    out = tmp_path / "short.fits"
    code, _, err = run(capsys, "simulate", src, "-o", out, "--ratio", "2", "--seed", "1")
    assert code == 0, err
    assert_hdus_unchanged(src, out, skip=("SCI", "UNCERT"))
    with fits.open(src) as a, fits.open(out) as b:
        assert [h.name for h in b] == [h.name for h in a]
        assert not np.allclose(b["UNCERT"].data, 1.5)


def test_simulate_errors(capsys, tmp_path):
    src = write_mef(tmp_path / "long.fits")
    out = tmp_path / "short.fits"
    code, _, err = run(capsys, "simulate", tmp_path / "missing.fits", "-o", out, "--ratio", 2)
    assert_one_line_error(code, err, "missing.fits: no such file")
    code, _, err = run(capsys, "simulate", src, "-o", out, "--ratio", "0.5")
    assert_one_line_error(code, err, "ratio must be a finite number > 1")
    code, _, err = run(capsys, "simulate", src, "-o", out, "--ratio", "2", "--hdu", "NOPE")
    assert_one_line_error(code, err, "has no HDU NOPE; its HDUs are 0:PRIMARY, 1:SCI")
    code, _, err = run(capsys, "simulate", src, "-o", out, "--ratio", "2", "--hdu", "4")
    assert_one_line_error(code, err, "HDU 4 (CAT) of")
    code, _, err = run(capsys, "simulate", src, "-o", out, "--ratio", "2", "--hdu", "9")
    assert_one_line_error(code, err, "has no HDU 9")
    code, _, err = run(capsys, "simulate", src, "-o", out, "--ratio", "2", "--unit", "Jy")
    assert_one_line_error(code, err, "Cannot convert unit 'Jy' to electrons")
    code, _, err = run(capsys, "simulate", src, "-o", out, "--ratio", "2",
                       "--detector", "hubble")
    assert_one_line_error(code, err, "Unknown detector 'hubble'")
    code, _, err = run(capsys, "simulate", src, "-o", tmp_path / "nodir" / "x.fits",
                       "--ratio", "2")
    assert_one_line_error(code, err, "does not exist")
    assert not out.exists()
    # refuses to overwrite
    out.write_bytes(b"precious")
    code, _, err = run(capsys, "simulate", src, "-o", out, "--ratio", "2")
    assert_one_line_error(code, err, "exists: pass --overwrite")
    assert out.read_bytes() == b"precious"
    code, _, err = run(capsys, "simulate", src, "-o", out, "--ratio", "2", "--overwrite")
    assert code == 0, err
    assert fits.getdata(out, "SCI").shape == SHAPE


def test_simulate_in_place_with_overwrite(capsys, tmp_path):
    src = write_mef(tmp_path / "img.fits")
    before = fits.getdata(src, "SCI").copy()
    code, _, err = run(capsys, "simulate", src, "-o", src, "--ratio", "2", "--seed", "2",
                       "--overwrite")
    assert code == 0, err
    after = fits.getdata(src, "SCI")
    assert after.shape == before.shape and not np.array_equal(after, before)
    assert fits.getheader(src, "DQ")["BITPIX"] == 16
    assert [p.name for p in tmp_path.iterdir()] == ["img.fits"]  # no temporary left


# --------------------------------------------------------------------------
# compare


def test_compare_prints_summary_and_writes_table(capsys, tmp_path):
    stars = ((10.0, 12.0, 4000.0), (28.0, 30.0, 3000.0), (30.0, 10.0, 2500.0))
    ref = tmp_path / "ref.fits"
    test = tmp_path / "test.fits"
    write_mef(ref, data=scene(seed=1, stars=stars))
    write_mef(test, data=scene(seed=2, stars=stars))
    table_path = tmp_path / "matched.ecsv"
    code, out, err = run(capsys, "compare", ref, test, "--table", table_path,
                         "--hdu", "SCI", "--min-area", "5")
    assert code == 0, err
    # issue 11: a one-line hint that --threshold reference exists and what it means
    hint = [line for line in out.splitlines() if line.startswith("Note:")]
    assert hint == [cli._THRESHOLD_HINT] and "--threshold reference" in hint[0]
    lines = dict(line.split(None, 1) for line in out.splitlines()
                 if line.strip() and not line.startswith("Note:"))
    assert lines["n_reference"].strip() == "3"
    assert lines["n_matched"].strip() == "3"
    assert float(lines["tpr"]) == 1.0
    assert lines["threshold"].strip() == "self"
    assert f"Wrote {table_path}" in out
    table = QTable.read(table_path)
    assert len(table) == 3 and all(table["matched"])
    assert table["flux_ref"].unit == u.electron / u.s
    assert_allclose(table["flux_test"].value, table["flux_ref"].value, rtol=0.1)
    # refuses to overwrite the table, accepts with --overwrite
    code, _, err = run(capsys, "compare", ref, test, "--table", table_path)
    assert_one_line_error(code, err, "exists: pass --overwrite")
    code, out, err = run(capsys, "compare", ref, test, "--table", table_path, "--overwrite",
                         "--threshold", "reference", "--input", test, "--min-area", "5")
    assert code == 0, err
    assert "reference" in out and "snr_gain" in out
    assert "Note:" not in out  # the hint is for the default (self) threshold only


def test_compare_errors(capsys, tmp_path):
    ref = write_mef(tmp_path / "ref.fits")
    other = tmp_path / "small.fits"
    fits.PrimaryHDU(np.zeros((10, 10), np.float32),
                    header=fits.Header({"BUNIT": "electron/s"})).writeto(other)
    code, _, err = run(capsys, "compare", ref, other)
    assert_one_line_error(code, err, "shape")
    code, _, err = run(capsys, "compare", ref, tmp_path / "nope.fits")
    assert_one_line_error(code, err, "nope.fits: no such file")


# --------------------------------------------------------------------------
# models


def test_models_list_empty_and_registered(capsys, model_bytes):  # noqa: F811
    code, out, err = run(capsys, "models")
    if not astro_unet.weights.REGISTRY:
        assert "No models are registered yet" in out
    assert code == 0 and "Cache:" in out
    register_model(ModelInfo(name="tiny-net", filename="tiny_net.pt", sha256=model_bytes[1],
                             description="a test entry"))
    code, out, err = run(capsys, "models", "--list")
    assert code == 0
    assert "tiny-net" in out and model_bytes[1][:12] in out and "a test entry" in out


def test_models_download_and_verify(capsys, model_bytes, http_server):  # noqa: F811
    content, digest = model_bytes
    root, base, requests = http_server
    (root / "tiny_net.pt").write_bytes(content)
    with conf.set_temp("weights_base_urls", [base]):
        info = register_model(ModelInfo(name="tiny-net", filename="tiny_net.pt",
                                        sha256=digest))
        code, out, err = run(capsys, "models", "--verify", "tiny-net")
        assert_one_line_error(code, err, "not in the cache: nothing to verify")
        code, out, err = run(capsys, "models", "--download", "tiny-net")
        assert code == 0, err
        path = out.strip().split(": ", 1)[1]
        assert Path(path).read_bytes() == content
        assert requests == ["/tiny_net.pt"]
        code, out, err = run(capsys, "models", "--verify", "tiny-net")
        assert code == 0 and "tiny-net: OK" in out
        Path(path).write_bytes(b"corrupt")  # corrupt the cached copy
        code, out, err = run(capsys, "models", "--verify", "tiny-net")
        assert code == 1 and "MISMATCH" in out
        assert not astro_unet.weights._in_cache(info.cache_key)
    code, out, err = run(capsys, "models", "--download", "nope")
    assert_one_line_error(code, err, "Unknown model 'nope'")
    code, out, err = run(capsys, "models", "--list", "--verify", "x")
    assert code == 2 and "not allowed with" in err


# --------------------------------------------------------------------------
# denoise

NORMALIZATION = {"unit": "electron", "transform": "asinh", "scale": 10.0}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny (untrained) model file: the CLI only has to pass it through."""
    import torch
    from astro_unet.model import AstroUNet, save_model

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("models") / "tiny_cli.pt"
    save_model(AstroUNet(base_channels=4, depth=2), path, normalization=NORMALIZATION)
    return path


def direct_denoise(path, hdu, **kwargs):
    from astro_unet.denoise import denoise_ccd

    ccd = CCDData.read(path, hdu=hdu)
    return denoise_ccd(ccd, exposure_time=EXPTIME, **kwargs)


def test_denoise_keeps_file_structure(capsys, tmp_path, model_file):
    src = write_mef(tmp_path / "short.fits")
    code, out, err = run(capsys, "denoise", src, "--ratio", "2", "--model", model_file,
                         "--device", "cpu")
    assert code == 0, err
    dst = tmp_path / "short_denoised.fits"  # the default output name
    assert f"Wrote {dst}" in out
    assert_hdus_unchanged(src, dst, skip=("SCI",))
    expected = direct_denoise(src, 1, ratio=2, model=str(model_file), device="cpu")
    with fits.open(src) as a, fits.open(dst) as b:
        assert [h.name for h in b] == [h.name for h in a] + ["UNCERT"]
        sci = b["SCI"]
        assert sci.header["BITPIX"] == -32
        assert_allclose(sci.data, expected.data.astype(np.float32))
        for key in ("MYKEY", "CRVAL1", "CRPIX2", "CDELT1", "CTYPE2", "BUNIT"):
            assert sci.header[key] == a["SCI"].header[key]
        assert sci.header["EXPTIME"] == EXPTIME * 2  # rate image: t r
        assert b[0].header["EXPTIME"] == EXPTIME
        assert sci.header["DNRATIO"] == 2
        assert any("denoise_ccd" in str(h) for h in sci.header["HISTORY"])
        assert_allclose(b["UNCERT"].data, expected.uncertainty.array.astype(np.float32))
    ccd = CCDData.read(dst, hdu="SCI")
    assert ccd.unit == u.electron / u.s and ccd.uncertainty is not None


def test_denoise_options_reach_denoise_ccd(capsys, tmp_path, model_file):
    # two chips: SCI,2 is processed, SCI,1 stays as it was
    chips = [fits.PrimaryHDU(header=fits.Header({"EXPTIME": EXPTIME}))]
    for ver in (1, 2):
        header = tan_wcs().to_header()
        header["BUNIT"] = "electron/s"
        chips.append(fits.ImageHDU(scene(seed=ver), header=header, name="SCI", ver=ver))
    src = tmp_path / "chips.fits"
    fits.HDUList(chips).writeto(src)
    dst = tmp_path / "out.fits"
    code, out, err = run(capsys, "denoise", src, "-o", dst, "--ratio", "3", "--model",
                         model_file, "--device", "cpu", "--hdu", "SCI,2", "--tile-size", "16",
                         "--overlap", "4", "--batch-size", "3", "--read-noise", "2.5",
                         "--mode", "feather", "--estimate", "mean", "--saturation", "5",
                         "--extrapolate")
    assert code == 0, err
    assert_hdus_unchanged(src, dst, skip=(2,))
    expected = direct_denoise(src, 2, ratio=3, model=str(model_file), device="cpu",
                              tile_size=16, overlap=4, batch_size=3, read_noise=2.5,
                              estimate="mean", saturation=5.0, extrapolate=True)
    assert 0 < expected.meta["DNNSAT"] and expected.meta["DNESTIM"] == "mean"
    with fits.open(dst) as b:
        assert_allclose(b[2].data, expected.data.astype(np.float32))
        assert (b[2].name, b[2].ver) == ("SCI", 2)
        for key in ("DNTILE", "DNOVERLP", "DNESTIM", "DNNSAT"):
            assert b[2].header[key] == expected.meta[key], key


def test_denoise_masked_pixels_write_a_mask(capsys, tmp_path, model_file):
    data = scene()
    data[5, 7] = np.nan
    src = write_mef(tmp_path / "nan.fits", data=data)
    code, out, err = run(capsys, "denoise", src, "--ratio", "2", "--model", model_file,
                         "--device", "cpu", "--exptime", "40")
    assert code == 0, err
    ccd = CCDData.read(tmp_path / "nan_denoised.fits", hdu="SCI")
    assert ccd.mask is not None and ccd.mask[5, 7] and ccd.mask.sum() == 1
    assert np.isnan(ccd.data[5, 7]) and np.isfinite(np.delete(ccd.data.ravel(), 5 * 40 + 7)).all()
    assert ccd.meta["EXPTIME"] == 80.0  # --exptime 40 times the ratio


def test_denoise_errors(capsys, tmp_path, model_file, monkeypatch):
    src = write_mef(tmp_path / "short.fits")
    dst = tmp_path / "short_denoised.fits"
    code, _, err = run(capsys, "denoise", src, "--ratio", "1", "--model", model_file)
    assert_one_line_error(code, err, "ratio must be a finite number > 1")
    code, _, err = run(capsys, "denoise", src, "--ratio", "2", "--model",
                       tmp_path / "missing.pt")
    assert_one_line_error(code, err, "missing.pt does not exist")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a model")
    code, _, err = run(capsys, "denoise", src, "--ratio", "2", "--model", junk)
    assert_one_line_error(code, err, "junk.pt")
    with conf.set_temp("default_model", "default"):
        astro_unet.weights._ALIASES["default"] = None
        # a default model loaded by an earlier test must not answer from the cache
        monkeypatch.setattr(_inference, "model_cache", collections.OrderedDict())
        code, _, err = run(capsys, "denoise", src, "--ratio", "2")
    assert_one_line_error(code, err, "No default astro_unet model is registered yet")
    code, _, err = run(capsys, "denoise", src, "--ratio", "2", "--tile-size", "0")
    assert code == 2 and "must be > 0" in err
    assert not dst.exists()
    # an existing output is kept unless --overwrite
    dst.write_bytes(b"keep me")
    code, _, err = run(capsys, "denoise", src, "--ratio", "2", "--model", model_file)
    assert_one_line_error(code, err, "exists: pass --overwrite")
    assert dst.read_bytes() == b"keep me"
    code, _, err = run(capsys, "denoise", src, "--ratio", "2", "--model", model_file,
                       "--device", "cpu", "--overwrite")
    assert code == 0, err
    assert fits.getdata(dst, "SCI").shape == SHAPE


def test_demo_runs_the_main_job(tmp_path, capsys):
    """``astro-unet demo``: simulate, denoise and compare the bundled sample."""
    from astropy.nddata import CCDData

    from astro_unet.model import AstroUNet, save_model

    model = tmp_path / "tiny.pt"
    save_model(AstroUNet(base_channels=4, depth=2, residual=True), model,
               normalization={"unit": "electron", "transform": "asinh", "scale": 10.0})
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(model), "--output-dir", str(out), "--ratio", "3"]) == 0
    text = capsys.readouterr().out
    assert "short (noisy input)" in text and "denoised" in text and "F-measure" in text
    assert "mean estimate" in text and "estimate='extended'" in text
    # issue 11: every printed number is explained; PSNR/SSIM (set by the brightest
    # star cores: 16.6 dB noisy, -4.3 dB denoised) are not in the headline
    lines = text.splitlines()
    header = next(line for line in lines if "detections" in line and "TPR" in line)
    legend = {line.split("  ")[0] for line in lines if line[:1].isalpha() and "  " in line}
    for _, heading in cli._DEMO_COLUMNS:
        assert heading in header and heading in legend, heading
    assert "PSNR" not in header and "SSIM" not in header
    assert "PSNR and SSIM are not shown" in text
    short = CCDData.read(out / "sample_short_r3.fits")
    denoised = CCDData.read(out / "sample_denoised_r3.fits")
    long = CCDData.read(out / "sample_long.fits")
    assert short.header["EXPTIME"] == pytest.approx(long.header["EXPTIME"] / 3)
    assert denoised.header["EXPTIME"] == pytest.approx(long.header["EXPTIME"])
    assert denoised.header["DNRATIO"] == 3
    # a second run refuses to overwrite
    assert main(["demo", "--model", str(model), "--output-dir", str(out), "--ratio", "3"]) == 1


# --------------------------------------------------------------------------
# denoise: several files on Dask


@pytest.fixture(scope="module")
def dask_scheduler():
    """Address of a small in-process Dask cluster (two single-threaded workers)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(processes=False, n_workers=2, threads_per_worker=1,
                                  protocol="tcp", host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as cluster:
        yield cluster.scheduler_address


def test_denoise_several_files_on_a_scheduler(capsys, tmp_path, model_file, dask_scheduler):
    a = write_mef(tmp_path / "a.fits")
    b = write_mef(tmp_path / "b.fits", data=scene(seed=5))
    out = tmp_path / "out"
    options = ["--output-dir", out, "--ratio", "2", "--model", model_file, "--device", "cpu",
               "--tile-size", "16", "--overlap", "4", "--scheduler", dask_scheduler]
    code, stdout, err = run(capsys, "denoise", a, b, *options)
    assert code == 0, err
    assert "Denoised 2, skipped 0" in stdout and "failed 0 of 2 files" in stdout
    assert str(out / "a_denoised.fits") in stdout
    for src in (a, b):
        dst = out / (src.stem + "_denoised.fits")
        assert_hdus_unchanged(src, dst, skip=("SCI",))
        expected = direct_denoise(src, 1, ratio=2, model=str(model_file), device="cpu",
                                  tile_size=16, overlap=4)
        assert_allclose(fits.getdata(dst, "SCI"), expected.data.astype(np.float32))
    # a rerun skips both; a bad file fails alone and sets the exit status
    (tmp_path / "bad.fits").write_bytes(b"this is not a FITS file\n" * 200)
    code, stdout, err = run(capsys, "denoise", a, b, tmp_path / "bad.fits", *options)
    assert code == 1
    assert "Denoised 0, skipped 2" in stdout and "failed 1 of 3 files" in stdout
    assert "does not appear to be a valid FITS file" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["a_denoised.fits", "b_denoised.fits"]


def test_denoise_directory_with_workers(capsys, tmp_path, model_file, monkeypatch):
    from astro_unet import files

    made = []
    original = files._local_cluster

    def in_process_cluster(workers, processes=True):
        made.append(workers)
        return original(workers, processes=False)  # quicker to start than processes

    monkeypatch.setattr(files, "_local_cluster", in_process_cluster)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        write_mef(folder / f"f{i}.fits", data=scene(seed=i))
    code, stdout, err = run(capsys, "denoise", folder, "--ratio", "2", "--model", model_file,
                            "--device", "cpu", "--workers", "2", "--suffix", "_dn")
    assert code == 0, err
    assert made == [2]
    assert sorted(p.name for p in folder.iterdir()) == [
        "f0.fits", "f0_dn.fits", "f1.fits", "f1_dn.fits", "f2.fits", "f2_dn.fits"]
    # the outputs of the first run are not inputs of the second
    code, stdout, err = run(capsys, "denoise", str(folder / "*.fits"), "--ratio", "2",
                            "--model", model_file, "--device", "cpu", "--suffix", "_dn")
    assert code == 0, err
    assert "skipped 3" in stdout and "of 3 files" in stdout


def test_denoise_single_file_output_dir_and_suffix(capsys, tmp_path, model_file):
    src = write_mef(tmp_path / "one.fits")
    out = tmp_path / "results"
    out.mkdir()
    code, stdout, err = run(capsys, "denoise", src, "--output-dir", out, "--suffix", "_x2",
                            "--ratio", "2", "--model", model_file, "--device", "cpu")
    assert code == 0, err
    assert stdout.strip() == f"Wrote {out / 'one_x2.fits'}"  # the single-file path, no Dask
    assert fits.getheader(out / "one_x2.fits", "SCI")["DNRATIO"] == 2


def test_denoise_several_files_usage_errors(capsys, tmp_path, model_file):
    a = write_mef(tmp_path / "a.fits")
    b = write_mef(tmp_path / "b.fits")
    code, _, err = run(capsys, "denoise", a, b, "-o", tmp_path / "x.fits", "--ratio", "2")
    assert_one_line_error(code, err, "with several inputs, a directory or a glob use "
                                     "--output-dir")
    code, _, err = run(capsys, "denoise", a, b, "--ratio", "2", "--progress")
    assert_one_line_error(code, err, "--progress shows the tiles of one image")
    code, _, err = run(capsys, "denoise", a, "--ratio", "2", "-o", tmp_path / "x.fits",
                       "--output-dir", tmp_path)
    assert_one_line_error(code, err, "give either -o/--output or --output-dir")
    code, _, err = run(capsys, "denoise", a, b, "--ratio", "2", "--workers", "2",
                       "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and "not allowed with" in err
    code, _, err = run(capsys, "denoise", a, b, "--ratio", "2", "--workers", "0")
    assert code == 2 and "must be > 0" in err
    code, _, err = run(capsys, "denoise", str(tmp_path / "*.fts"), "--ratio", "2",
                       "--model", model_file)
    assert_one_line_error(code, err, "no FITS file matches")
    code, _, err = run(capsys, "denoise", a, b, "--ratio", "2", "--model",
                       tmp_path / "missing.pt")
    assert_one_line_error(code, err, "missing.pt does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fits", "b.fits"]


# --------------------------------------------------------------------------
# issue 11: first-hour rough edges


def test_written_files_honour_the_umask(capsys, tmp_path, model_file):
    # issue 11: temporary file + os.replace gave every output mode 0600
    src = write_mef(tmp_path / "in.fits")
    old = os.umask(0o022)
    try:
        code, _, err = run(capsys, "simulate", src, "-o", tmp_path / "short.fits", "--ratio",
                           "2", "--detector", "wfc3_uvis", "--seed", "1")
        assert code == 0, err
        code, _, err = run(capsys, "denoise", tmp_path / "short.fits", "--ratio", "2",
                           "--model", model_file, "--device", "cpu")
        assert code == 0, err
    finally:
        os.umask(old)
    for name in ("short.fits", "short_denoised.fits"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.fits", "short.fits", "short_denoised.fits"]


def truncate(src, dst, cut=5000):
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[:len(data) - cut])
    return dst


def test_truncated_or_corrupt_file_is_named(capsys, tmp_path, model_file):
    # issue 11: only "TypeError: buffer is too small for requested array"
    src = tmp_path / "in.fits"
    fits.PrimaryHDU(scene().astype(np.float32),
                    header=fits.Header({"BUNIT": "electron/s", "EXPTIME": EXPTIME})).writeto(src)
    cut = truncate(src, tmp_path / "cut.fits", cut=2000)  # inside the data
    code, _, err = run(capsys, "denoise", cut, "--ratio", "2", "--model", model_file,
                       "--device", "cpu")
    assert_one_line_error(code, err, f"{cut} is truncated (File may have been truncated")
    assert "buffer is too small" not in err
    code, _, err = run(capsys, "compare", src, cut)
    assert_one_line_error(code, err, f"{cut} is truncated")
    # cut inside the header of the last HDU of a multi-extension file
    cut_mef = truncate(write_mef(tmp_path / "mef.fits"), tmp_path / "cut_mef.fits", cut=5000)
    code, _, err = run(capsys, "simulate", cut_mef, "-o", tmp_path / "o.fits", "--ratio", "2")
    assert_one_line_error(code, err, f"{cut_mef} is truncated or corrupt (Error validating")
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    code, _, err = run(capsys, "simulate", empty, "-o", tmp_path / "o.fits", "--ratio", "2")
    assert_one_line_error(code, err, f"{empty} cannot be read as FITS (empty, truncated or "
                                     "corrupt file)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cut.fits", "cut_mef.fits", "empty.fits", "in.fits", "mef.fits"]


def test_errors_name_flags_not_python_keywords(capsys, tmp_path, model_file):
    # issue 11: "pass gain=...", "exposure_time=", "read_noise=" in CLI errors
    src = write_mef(tmp_path / "in.fits")
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(scene().astype(np.float32)).writeto(plain)
    base = ("denoise", plain, "--ratio", "2", "--model", model_file, "--device", "cpu")
    code, _, err = run(capsys, *base, "--unit", "adu")
    assert_one_line_error(code, err, "pass --gain G (electron / adu) or set the GAIN header")
    assert "gain=" not in err
    code, _, err = run(capsys, *base, "--unit", "adu", "--gain", "-2")
    assert_one_line_error(code, err, "error: --gain must be a finite positive number, got -2.0.")
    code, _, err = run(capsys, *base, "--unit", "electron/s")
    assert_one_line_error(code, err, "pass --exptime S (seconds) or set the EXPTIME header")
    code, _, err = run(capsys, *base, "--unit", "electron/s", "--exptime", "0")
    assert_one_line_error(code, err, "error: --exptime must be a finite positive number")
    code, _, err = run(capsys, "simulate", plain, "-o", tmp_path / "o.fits", "--ratio", "2",
                       "--unit", "electron")
    assert_one_line_error(code, err, "pass --read-noise E (electrons) or --detector NAME (one")
    code, _, err = run(capsys, "simulate", src, "-o", tmp_path / "o.fits", "--ratio", "2",
                       "--read-noise", "-1")
    assert_one_line_error(code, err, "error: --read-noise must be a finite number >= 0")
    # the ratio guard of the bundled model (trained on ratios 1.5 to 10)
    code, _, err = run(capsys, "denoise", plain, "--ratio", "30", "--unit", "electron",
                       "--device", "cpu", "-o", tmp_path / "far.fits")
    assert_one_line_error(code, err, "Pass --extrapolate to run it anyway.")
    assert "--ratio 30 is more than 2 times" in err and "=True" not in err
    code, _, err = run(capsys, *base, "--unit", "electron", "--saturation", "-1")
    assert_one_line_error(code, err, "error: --saturation must be a finite number > 0")


def test_simulate_adu_writes_gain_for_the_next_step(capsys, tmp_path, model_file):
    # issue 11: `simulate --unit adu --gain 2.7` wrote SIMGAIN but not GAIN, so
    # `denoise` of its output failed until --gain was given again
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(scene().astype(np.float32),
                    header=fits.Header({"EXPTIME": EXPTIME})).writeto(plain)
    code, _, err = run(capsys, "simulate", plain, "-o", tmp_path / "short.fits", "--ratio", "2",
                       "--unit", "adu", "--gain", "2.7", "--read-noise", "3", "--seed", "0")
    assert code == 0, err
    header = fits.getheader(tmp_path / "short.fits")
    assert header["GAIN"] == 2.7 and header["SIMGAIN"] == 2.7 and header["BUNIT"] == "adu"
    code, _, err = run(capsys, "denoise", tmp_path / "short.fits", "--ratio", "2", "--model",
                       model_file, "--device", "cpu")
    assert code == 0, err
