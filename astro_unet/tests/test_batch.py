# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of `astro_unet.files` and `astro_unet.large`: many files and huge mosaics on Dask."""

import os
import stat

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table
from astropy.wcs import WCS
from numpy.testing import assert_allclose, assert_array_equal

import astro_unet.weights
from astro_unet import denoise_ccd
from astro_unet.files import _expand_inputs, denoise_files
from astro_unet.large import LargeResult, _axis_chunks, _axis_needs, denoise_large
from astro_unet.model import AstroUNet, save_model
from astro_unet.tiling import plan_tiles

pytest.importorskip("distributed")
import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

ASINH = {"unit": "electron", "transform": "asinh", "scale": 10.0}
NOISE = {"unit": "electron/s", "transform": "asinh", "scale": "noise"}
EXPTIME = 100.0
SHAPE = (64, 64)


def tan_wcs(shape=SHAPE):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-0.04 / 3600, 0.04 / 3600]
    return w


def image(seed=0, shape=SHAPE):
    """Poisson noise on a sky with a few stars, electron/s (float32)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    expected = np.full(shape, 20.0)
    for _ in range(max(2, shape[0] * shape[1] // 2000)):
        y, x = rng.uniform(5, shape[0] - 5), rng.uniform(5, shape[1] - 5)
        expected += 3000 / (2 * np.pi * 2.25) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.5)
    return (rng.poisson(expected * EXPTIME) / EXPTIME).astype(np.float32)


def write_mef(path, seed=0, *, bunit="electron/s", data=None):
    """Empty primary (EXPTIME), SCI with WCS, a DQ extension."""
    primary = fits.PrimaryHDU(header=fits.Header({"EXPTIME": EXPTIME, "FILTER": "F555W"}))
    header = tan_wcs().to_header()
    if bunit:
        header["BUNIT"] = bunit
    sci = fits.ImageHDU(image(seed) if data is None else data, header=header, name="SCI")
    dq = fits.ImageHDU(np.zeros(SHAPE, np.int16), name="DQ")
    fits.HDUList([primary, sci, dq]).writeto(path)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import torch

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("models") / "tiny_batch.pt"
    save_model(AstroUNet(base_channels=4, depth=3), path, normalization=ASINH)
    return path


@pytest.fixture(scope="module")
def client():
    """Two single-threaded workers in this process (fast to start, countable loads)."""
    with LocalCluster(processes=False, n_workers=2, threads_per_worker=1, protocol="tcp",
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as c:
        yield c


def reference(path, model, **kwargs):
    ccd = CCDData.read(path, hdu="SCI")
    ccd.meta["EXPTIME"] = EXPTIME
    return denoise_ccd(ccd, ratio=2, model=str(model), device="cpu", **kwargs)


def names(folder):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------
# many files


def test_denoise_files_matches_denoise_ccd(tmp_path, model_file, client):
    inputs = [write_mef(tmp_path / f"f{i}.fits", seed=i) for i in range(3)]
    before = [fits.getdata(p, "SCI").copy() for p in inputs]
    out = tmp_path / "out"
    table = denoise_files([str(p) for p in inputs], out, ratio=2, model=model_file,
                          client=client, device="cpu", tile_size=32, overlap=8)
    assert isinstance(table, Table)
    assert table.colnames == ["input", "output", "status", "seconds", "worker"]
    assert list(table["status"]) == ["ok"] * 3
    assert list(table["input"]) == [str(p) for p in inputs]   # input order kept
    assert list(table["output"]) == [str(out / f"f{i}_denoised.fits") for i in range(3)]
    assert table["seconds"].unit == u.s and all(table["seconds"] > 0)
    assert set(table["worker"]) <= set(client.scheduler_info()["workers"])
    assert table.meta["n_ok"] == 3 and table.meta["n_error"] == 0
    assert names(out) == ["f0_denoised.fits", "f1_denoised.fits", "f2_denoised.fits"]
    for i, path in enumerate(inputs):
        assert_array_equal(fits.getdata(path, "SCI"), before[i])   # inputs untouched
        expected = reference(path, model_file, tile_size=32, overlap=8)
        with fits.open(out / f"f{i}_denoised.fits") as hdul:
            assert [h.name for h in hdul] == ["PRIMARY", "SCI", "DQ", "UNCERT"]
            assert_allclose(hdul["SCI"].data, expected.data.astype(np.float32), rtol=1e-6)
            assert_allclose(hdul["UNCERT"].data,
                            expected.uncertainty.array.astype(np.float32), rtol=1e-6)
            assert hdul["SCI"].header["EXPTIME"] == 2 * EXPTIME
            assert hdul["SCI"].header["DNRATIO"] == 2
            assert hdul[0].header["FILTER"] == "F555W"
            assert WCS(hdul["SCI"].header).wcs.compare(WCS(fits.getheader(path, "SCI")).wcs)


def test_model_loaded_once_per_worker_process(tmp_path, model_file, client, monkeypatch):
    import torch

    # a fresh model file, so that no earlier test has it in the cache
    path = tmp_path / "count.pt"
    torch.manual_seed(5)
    save_model(AstroUNet(base_channels=4, depth=2), path, normalization=ASINH)
    loads = []
    original = astro_unet.weights.load_model

    def counting(*args, **kwargs):
        loads.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(astro_unet.weights, "load_model", counting)
    inputs = [write_mef(tmp_path / f"c{i}.fits", seed=i) for i in range(4)]
    table = denoise_files(inputs, tmp_path / "out", ratio=2, model=path, client=client,
                          device="cpu", tile_size=32, overlap=8)
    assert list(table["status"]) == ["ok"] * 4
    assert len(set(table["worker"])) >= 1
    # two worker threads share this process: the model was read from disk once
    assert loads == [str(path)]
    table = denoise_files(inputs, tmp_path / "out", ratio=2, model=path, client=client,
                          device="cpu", tile_size=32, overlap=8, overwrite=True)
    assert list(table["status"]) == ["ok"] * 4
    assert len(loads) == 1


def test_in_memory_network_is_sent_to_the_workers(tmp_path, model_file, client):
    from astro_unet.model import load_model_file

    net, _ = load_model_file(model_file)
    src = write_mef(tmp_path / "a.fits")
    table = denoise_files(src, tmp_path / "out", ratio=2, model=net, client=client,
                          device="cpu", tile_size=32, overlap=8)
    assert list(table["status"]) == ["ok"]
    expected = reference(src, model_file, tile_size=32, overlap=8)
    assert_allclose(fits.getdata(tmp_path / "out" / "a_denoised.fits", "SCI"),
                    expected.data.astype(np.float32), rtol=1e-6)


def test_bad_files_are_reported_and_do_not_stop_the_others(tmp_path, model_file, client):
    good = write_mef(tmp_path / "good.fits")
    corrupt = tmp_path / "corrupt.fits"
    corrupt.write_bytes(b"this is not a FITS file\n" * 200)
    nounit = write_mef(tmp_path / "nounit.fits", bunit=None)
    missing = tmp_path / "missing.fits"
    out = tmp_path / "out"
    table = denoise_files([corrupt, good, nounit, missing], out, ratio=2, model=model_file,
                          client=client, device="cpu", tile_size=32, overlap=8)
    status = dict(zip([os.path.basename(p) for p in table["input"]], table["status"]))
    assert status["good.fits"] == "ok"
    assert status["corrupt.fits"].startswith("error: ")
    assert "does not appear to be a valid FITS file" in status["corrupt.fits"]
    # library words, not the command's flags (issue 12), and no exception type
    assert status["nounit.fits"].startswith(f"error: {nounit} (HDU 1 (SCI)) has no BUNIT "
                                            "keyword: pass the image unit with unit=...")
    assert "--" not in status["nounit.fits"]
    assert status["missing.fits"] == f"error: {missing}: no such file."
    assert table.meta["n_ok"] == 1 and table.meta["n_error"] == 3
    assert names(out) == ["good_denoised.fits"]  # no partial or temporary file
    # unit given: the file without BUNIT is fine
    table = denoise_files([nounit], out, ratio=2, model=model_file, client=client,
                          device="cpu", unit="electron/s", tile_size=32, overlap=8)
    assert list(table["status"]) == ["ok"]
    assert fits.getheader(out / "nounit_denoised.fits", "SCI")["BUNIT"] == "electron / s"


def test_interrupted_write_leaves_no_output_and_rerun_resumes(tmp_path, model_file, client,
                                                              monkeypatch):
    inputs = [write_mef(tmp_path / f"r{i}.fits", seed=i) for i in range(3)]
    out = tmp_path / "out"
    original = fits.HDUList.writeto

    def dying_writeto(self, fileobj, *args, **kwargs):
        if "r1" in os.fspath(fileobj):
            with open(fileobj, "wb") as f:   # half a file, then the "crash"
                f.write(b"SIMPLE  =                    T")
            raise OSError(28, "No space left on device", os.fspath(fileobj))
        return original(self, fileobj, *args, **kwargs)

    monkeypatch.setattr(fits.HDUList, "writeto", dying_writeto)
    table = denoise_files(inputs, out, ratio=2, model=model_file, client=client,
                          device="cpu", tile_size=32, overlap=8)
    assert list(table["status"][[0, 2]]) == ["ok", "ok"]
    assert "No space left on device" in table["status"][1]
    assert names(out) == ["r0_denoised.fits", "r2_denoised.fits"]  # no truncated r1
    monkeypatch.undo()
    # a killed run leaves a hidden temporary file at most: never an input, never an output
    (tmp_path / ".astro-unet-abc-r9.fits").write_bytes(b"partial")
    stamp = (out / "r0_denoised.fits").stat().st_mtime_ns
    table = denoise_files(tmp_path, out, ratio=2, model=model_file, client=client,
                          device="cpu", tile_size=32, overlap=8)
    assert [os.path.basename(p) for p in table["input"]] == ["r0.fits", "r1.fits", "r2.fits"]
    assert list(table["status"]) == ["skipped", "ok", "skipped"]
    assert (out / "r0_denoised.fits").stat().st_mtime_ns == stamp
    assert CCDData.read(out / "r1_denoised.fits", hdu="SCI").shape == SHAPE
    table = denoise_files(tmp_path, out, ratio=2, model=model_file, client=client,
                          device="cpu", tile_size=32, overlap=8, overwrite=True)
    assert list(table["status"]) == ["ok"] * 3


def test_expand_inputs(tmp_path):
    from ccdproc import ImageFileCollection

    for name, filt in (("a.fits", "R"), ("b.fit", "V"), ("c.fits.gz", "R")):
        fits.PrimaryHDU(np.zeros((4, 4), np.float32),
                        header=fits.Header({"FILTER": filt})).writeto(tmp_path / name)
    (tmp_path / "a_denoised.fits").write_bytes(b"")     # an earlier output
    (tmp_path / ".astro-unet-x-a.fits").write_bytes(b"")  # a leftover temporary file
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(tmp_path / "sub" / "d.fits")
    expected = [str(tmp_path / n) for n in ("a.fits", "b.fit", "c.fits.gz")]
    assert [p for p, _ in _expand_inputs(tmp_path, "_denoised")] == expected
    assert [p for p, _ in _expand_inputs(str(tmp_path / "*.fit*"), "_denoised")] == expected
    assert [p for p, _ in _expand_inputs([str(tmp_path / "**" / "d.fits")], "_x")] == \
        [str(tmp_path / "sub" / "d.fits")]
    # explicit names are taken as given, even an earlier output
    assert _expand_inputs([tmp_path / "a_denoised.fits"], "_denoised") == \
        [(str(tmp_path / "a_denoised.fits"), None)]
    collection = ImageFileCollection(str(tmp_path), keywords=["filter"], ext=0)
    assert sorted(os.path.basename(p) for p, _ in
                  _expand_inputs(collection.filter(filter="R"), "_denoised")) == \
        ["a.fits", "c.fits.gz"]
    with pytest.raises(ValueError, match="no FITS file matches"):
        _expand_inputs(str(tmp_path / "*.fts"), "_denoised")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no FITS file"):
        _expand_inputs(tmp_path / "empty", "")
    with pytest.raises(TypeError, match="is not a path"):
        _expand_inputs([3], "")


def test_image_file_collection_with_filter(tmp_path, model_file, client):
    from ccdproc import ImageFileCollection

    for i, filt in enumerate(("R", "V", "R")):
        write_mef(tmp_path / f"i{i}.fits", seed=i)
        with fits.open(tmp_path / f"i{i}.fits", mode="update") as hdul:
            hdul["SCI"].header["FILTER"] = filt
    collection = ImageFileCollection(str(tmp_path), keywords=["filter"], ext=1)
    table = denoise_files(collection.filter(filter="R"), tmp_path / "out", ratio=2,
                          model=model_file, client=client, device="cpu", hdu="SCI",
                          tile_size=32, overlap=8)
    assert sorted(os.path.basename(p) for p in table["input"]) == ["i0.fits", "i2.fits"]
    assert names(tmp_path / "out") == ["i0_denoised.fits", "i2_denoised.fits"]


def test_denoise_files_errors_before_running(tmp_path, model_file):
    a = write_mef(tmp_path / "a.fits")
    (tmp_path / "x").mkdir()
    b = write_mef(tmp_path / "x" / "a.fits")
    with pytest.raises(ValueError, match="would both be written to"):
        denoise_files([a, b], tmp_path / "out", ratio=2, model=model_file)
    with pytest.raises(ValueError, match="would replace it"):
        denoise_files([a], None, ratio=2, model=model_file, suffix="")
    with pytest.raises(ValueError, match="ratio must be a finite number > 1"):
        denoise_files([a], tmp_path / "out", ratio=1, model=model_file)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        denoise_files([a], tmp_path / "out", ratio=2, model=model_file, tilesize=3)
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        denoise_files([a], tmp_path / "out", ratio=2, model=tmp_path / "nope.pt")
    with pytest.raises(TypeError, match="inputs must be"):
        denoise_files(3, tmp_path / "out", ratio=2, model=model_file)
    assert not (tmp_path / "out").exists()


def test_default_local_cluster_of_processes(tmp_path, model_file):
    """No client: a LocalCluster of worker processes is started and closed."""
    src = write_mef(tmp_path / "p.fits")
    table = denoise_files(src, None, ratio=2, model=model_file, workers=1, device="cpu",
                          tile_size=32, overlap=8)
    assert list(table["status"]) == ["ok"]
    assert table["worker"][0].startswith("tcp://")
    expected = reference(src, model_file, tile_size=32, overlap=8)
    assert_allclose(fits.getdata(tmp_path / "p_denoised.fits", "SCI"),
                    expected.data.astype(np.float32), rtol=1e-6)


def _worker_environ():
    return {key: os.environ.get(key) for key in
            ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def test_local_cluster_worker_environment(monkeypatch):
    """
    The workers get their share of the cores and glibc's default trim
    threshold (distributed's 65536 slows torch on the CPU ~1.8x); the
    caller's environment is unchanged.
    """
    from distributed import Client

    from astro_unet.files import _local_cluster

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as an earlier cluster leaves it
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = dict(os.environ)
    with _local_cluster(1) as cluster, Client(cluster) as client:
        (env,) = client.run(_worker_environ).values()
    assert env["MALLOC_TRIM_THRESHOLD_"] is None
    threads = str(os.cpu_count() or 1)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == threads
    assert dict(os.environ) == before


# --------------------------------------------------------------------------
# huge mosaics


def large_image(shape=(200, 300), seed=1):
    data = image(seed, shape)
    data[50, 60] = np.nan
    data[120:123, 7:9] = np.inf
    return data


def write_large(path, data, **extra):
    header = tan_wcs(data.shape).to_header()
    header.update({"BUNIT": "electron/s", "EXPTIME": EXPTIME, **extra})
    fits.PrimaryHDU(data, header=header).writeto(path)
    return path


@pytest.mark.parametrize("norm, cond", [(ASINH, ("ratio",)),
                                        (NOISE, ("ratio", "log_noise")),
                                        (dict(ASINH, offset="median"), ("ratio",)),
                                        ({"unit": "electron", "transform": "anscombe",
                                          "read_noise": 3.0}, ("ratio", "read_noise"))],
                         ids=["asinh-10", "noise-scaled", "median-offset", "anscombe"])
def test_denoise_large_equals_denoise_ccd(tmp_path, norm, cond):
    import torch

    torch.manual_seed(11)
    model = tmp_path / "m.pt"
    save_model(AstroUNet(base_channels=4, depth=3, cond_names=cond), model,
               normalization=norm)
    data = large_image()
    src = write_large(tmp_path / "mosaic.fits", data)
    kwargs = dict(ratio=2, model=model, device="cpu", tile_size=64, overlap=16)
    expected = denoise_ccd(CCDData.read(src), **kwargs)
    out = denoise_large(src, tmp_path / "out.fits", chunk_size=96, **kwargs)
    assert out == str(tmp_path / "out.fits")
    assert_array_equal(fits.getdata(src), data)     # input untouched
    assert names(tmp_path) == ["m.pt", "mosaic.fits", "out.fits"]
    result = CCDData.read(out)
    assert result.data.dtype == np.dtype(">f4")
    good = np.isfinite(data)
    assert expected.data.dtype == np.float32  # big-endian float32 in, float32 out
    assert_allclose(result.data[good], expected.data[good], rtol=2e-6, atol=1e-6)
    assert_allclose(result.uncertainty.array[good], expected.uncertainty.array[good],
                    rtol=2e-6, atol=1e-6)
    assert np.isnan(result.data[~good]).all()
    assert_array_equal(result.mask, ~good)
    assert_array_equal(result.mask, expected.mask)
    assert result.unit == u.electron / u.s
    assert result.wcs.wcs.compare(WCS(fits.getheader(src)).wcs)
    keys = ["DNMODEL", "DNVER", "DNSHA256", "DNSHAOF", "DNRATIO", "DNESTIM", "DNTILE",
            "DNOVERLP", "DNMODE", "DNDEVICE", "DNUNCERT", "EXPTIME"]
    if norm.get("scale") == "noise":
        keys.append("DNNOISE")
        assert expected.meta["DNNOISE"] > 0
    else:
        assert "DNNOISE" not in result.meta
    for key in keys:
        assert result.meta[key] == expected.meta[key], key
    assert "denoise_large(ratio=2" in str(result.meta["HISTORY"])
    # the blocks really were smaller than the image
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "UNCERT", "MASK"]


def test_denoise_large_dask_array_is_lazy_and_matches(tmp_path):
    import torch

    torch.manual_seed(2)
    net = AstroUNet(base_channels=4, depth=2, cond_names=("ratio", "log_noise"))
    net.normalization = {"unit": "electron", "transform": "asinh", "scale": "noise"}
    data = image(4, (150, 170)).astype(np.float64) * EXPTIME
    ref = denoise_ccd(CCDData(data, unit="electron"), ratio=3, model=net, device="cpu",
                      tile_size=48, overlap=12)
    array = da.from_array(data, chunks=40)
    res = denoise_large(array, ratio=3, model=net, unit="electron", chunk_size=64,
                        device="cpu", tile_size=48, overlap=12)
    assert isinstance(res, LargeResult) and isinstance(res.data, da.Array)
    assert res.data.dtype == np.float64
    assert_allclose(res.data.compute(), ref.data, rtol=1e-12, atol=1e-9)
    assert_allclose(res.uncertainty.compute(), ref.uncertainty.array, rtol=1e-12, atol=1e-9)
    assert not res.mask.compute().any()
    assert res.header["DNNOISE"] == ref.meta["DNNOISE"]
    assert res.header["BUNIT"] == "electron" and "EXPTIME" not in res.header


@pytest.mark.parametrize("estimate", ["mean", "long"])
def test_denoise_large_estimates_and_saturation_match_denoise_ccd(estimate):
    import torch

    torch.manual_seed(3)
    net = AstroUNet(base_channels=4, depth=2, cond_names=("ratio", "log_noise"))
    net.normalization = {"unit": "electron", "transform": "asinh", "scale": "noise"}
    data = image(5, (150, 170)).astype(np.float64) * EXPTIME
    data[20, 30] = np.nan
    level = np.nanpercentile(data, 99.5)
    kwargs = dict(ratio=3, model=net, device="cpu", tile_size=48, overlap=12,
                  estimate=estimate, saturation=level)
    ref = denoise_ccd(CCDData(data, unit="electron"), **kwargs)
    res = denoise_large(da.from_array(data, chunks=40), unit="electron", chunk_size=64,
                        **kwargs)
    good = np.isfinite(data)
    assert_allclose(res.data.compute()[good], ref.data[good], rtol=1e-12, atol=1e-9)
    assert_array_equal(res.mask.compute(), ref.mask)
    assert ref.mask.sum() == 1 + (data >= level).sum()
    assert res.header["DNESTIM"] == estimate


def test_denoise_large_paper_mode_padding_and_client(tmp_path, client):
    """Odd shape (reflection padding), paper mode, an extension HDU, a distributed client."""
    import torch

    torch.manual_seed(4)
    net = AstroUNet(base_channels=4, depth=3)
    data = large_image((101, 133), seed=6)
    src = tmp_path / "ext.fits"
    header = tan_wcs(data.shape).to_header()
    header["BUNIT"] = "electron/s"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"EXPTIME": EXPTIME})),
                  fits.ImageHDU(data, header=header, name="SCI")]).writeto(src)
    ccd = CCDData.read(src, hdu="SCI")
    ccd.meta["EXPTIME"] = EXPTIME
    ref = denoise_ccd(ccd, ratio=2, model=net, device="cpu", mode="paper", tile_size=48)
    out = denoise_large(src, tmp_path / "out.fits", ratio=2, model=net, device="cpu",
                        mode="paper", tile_size=48, chunk_size=50, client=client)
    result = CCDData.read(out)
    good = np.isfinite(data)
    assert_allclose(result.data[good], ref.data[good], rtol=2e-6, atol=1e-6)
    assert result.meta["EXPTIME"] == 2 * EXPTIME and result.meta["DNMODE"] == "paper"
    assert "EXTNAME" not in result.meta and "XTENSION" not in result.meta


def test_denoise_large_scaled_integer_file(tmp_path, model_file):
    """BSCALE/BZERO integers are scaled block by block like CCDData.read scales them."""
    data = np.round(image(7, (80, 96)) * 10).astype(np.int16)
    header = fits.Header({"BUNIT": "adu", "GAIN": 2.0, "EXPTIME": EXPTIME})
    hdu = fits.PrimaryHDU(data, header=header)
    hdu.scale("int16", bscale=0.5, bzero=100.0)
    hdu.writeto(tmp_path / "int.fits")
    assert fits.getheader(tmp_path / "int.fits")["BITPIX"] == 16
    ccd = CCDData.read(tmp_path / "int.fits")
    kwargs = dict(ratio=2, model=model_file, device="cpu", tile_size=32, overlap=8)
    expected = denoise_ccd(ccd, **kwargs)
    res = denoise_large(tmp_path / "int.fits", chunk_size=40, **kwargs)
    assert_allclose(res.data.compute(), expected.data, rtol=1e-6, atol=1e-6)
    assert res.header["BUNIT"] == "adu" and res.header["EXPTIME"] == 2 * EXPTIME
    assert "BSCALE" not in res.header and "BZERO" not in res.header


def test_denoise_large_errors(tmp_path, model_file):
    src = write_large(tmp_path / "m.fits", image(0, (40, 40)))
    (tmp_path / "exists.fits").write_bytes(b"keep")
    kwargs = dict(ratio=2, model=model_file, device="cpu")
    with pytest.raises(FileExistsError, match="exists: pass overwrite=True"):
        denoise_large(src, tmp_path / "exists.fits", **kwargs)
    assert (tmp_path / "exists.fits").read_bytes() == b"keep"
    with pytest.raises(FileNotFoundError, match="no such file"):
        denoise_large(tmp_path / "nope.fits", **kwargs)
    with pytest.raises(u.UnitsError, match="has no unit"):
        denoise_large(da.zeros((40, 40), chunks=20), **kwargs)
    with pytest.raises(ValueError, match="must be 2-D"):
        denoise_large(da.zeros((2, 40, 40), chunks=20), unit="electron", **kwargs)
    with pytest.raises(TypeError, match="use denoise_ccd for in-memory images"):
        denoise_large(np.zeros((40, 40)), unit="electron", **kwargs)
    with pytest.raises(ValueError, match="no finite pixel"):
        denoise_large(da.full((40, 40), np.nan, chunks=20), unit="electron", **kwargs)
    with pytest.raises(ValueError, match="ratio must be"):
        denoise_large(src, ratio=0.5, model=model_file)
    with pytest.raises(ValueError, match="has no HDU 3"):
        denoise_large(src, hdu=3, **kwargs)
    with pytest.raises(u.UnitsError, match="Cannot convert unit 'Jy'"):
        denoise_large(src, unit="Jy", **kwargs)
    # issue 11: values the network's float32 arithmetic cannot hold (all NaN before)
    huge = np.full((40, 40), 5.0)
    huge[7, 9] = 1e300
    with pytest.raises(ValueError, match=r"1 pixel\(s\) beyond .* float32 arithmetic"):
        denoise_large(da.from_array(huge, chunks=20), unit="electron", **kwargs)
    assert names(tmp_path) == ["exists.fits", "m.fits"]


@pytest.mark.parametrize("shape", [(2100, 2000), (300, 200)], ids=["subsampled", "all"])
def test_scan_statistics_equal_denoise(shape, monkeypatch):
    """Noise and median from strips equal those of the whole image, subsample included."""
    import dask

    from astro_unet import _normalization, large
    from astro_unet.large import _scan

    monkeypatch.setattr(large, "_STRIP_PIXELS", 160 * shape[1] + 7)  # 160-row strips

    rng = np.random.default_rng(0)
    data = rng.normal(50.0, 7.0, shape).astype(np.float32)
    data[rng.random(shape) < 0.01] = np.nan
    data[5, :] = np.inf
    bad = ~np.isfinite(data)
    scale, to_model = 3.0, 0.01
    x_model = data.astype(np.float64)
    x_model *= scale
    _normalization.fill_bad(x_model, bad)
    x_model *= to_model

    def compute(*tasks):
        assert len(tasks) == -(-shape[0] // 160)
        return dask.compute(*tasks, scheduler="sync")

    n_bad, noise, level = _scan(da.from_array(data, chunks=(128, 1000)), scale=scale,
                                to_model=to_model, compute=compute)
    assert n_bad == bad.sum()
    assert noise == _normalization.background_noise(x_model, bad)
    assert level == _normalization.background_level(x_model, bad)
    if shape[0] * shape[1] > 4_000_000:  # the subsample really differs from all pixels
        assert level != float(np.median(x_model[~bad]))


def test_strip_sample_holds_only_the_subsample():
    """
    The sample of a strip owns its memory: a strided view would keep the whole
    strip's differences and pixels alive until every strip is read (memory
    proportional to the mosaic: 4 GB on a 16k x 16k image).
    """
    from astro_unet.large import _strip_sample

    strip = np.random.default_rng(1).normal(10.0, 1.0, (64, 1000)).astype(np.float32)
    diffs, pixels = _strip_sample(strip, scale=1.0, to_model=1.0, diff_at=(3, 50),
                                  pixel_at=(7, 50))
    for sample, full in ((diffs, 64 * 999), (pixels, 64 * 1000)):
        assert sample.base is None
        assert sample.nbytes <= 8 * (full // 50 + 1)


@pytest.mark.parametrize("length, tile_size, overlap, target",
                         [(1000, 256, 32, 300), (16384, 512, 32, 4096), (300, 64, 16, 96),
                          (200, 64, 60, 50), (90, 64, 16, 1000)])
def test_axis_chunks_cover_the_tiles(length, tile_size, overlap, target):
    plan = plan_tiles((length, 8), tile_size=tile_size, overlap=overlap, size_multiple=4)
    tile = plan.tile_shape[0]
    sizes, depth = _axis_chunks(plan.padded_shape[0], plan.y_starts, tile, target)
    assert sum(sizes) == plan.padded_shape[0]
    assert all(s >= depth for s in sizes) or len(sizes) == 1
    edges = np.concatenate([[0], np.cumsum(sizes)])
    for i, (lo, hi) in enumerate(_axis_needs(edges, plan.y_starts, tile)):
        assert (i == 0 or lo <= depth) and (i == len(sizes) - 1 or hi <= depth)
    if len(sizes) > 1:
        assert depth < tile  # edges in the middle of a tile: about half a tile


def test_outputs_honour_the_umask(tmp_path, model_file, client):
    # issue 11: denoise_files and denoise_large wrote mode 0600 files
    src = write_mef(tmp_path / "a.fits")
    old = os.umask(0o022)
    try:
        table = denoise_files([src], tmp_path / "out", ratio=2, model=model_file,
                              client=client, device="cpu", tile_size=32, overlap=8)
        large = denoise_large(src, tmp_path / "large.fits", ratio=2, model=model_file,
                              device="cpu", chunk_size=32)
    finally:
        os.umask(old)
    assert list(table["status"]) == ["ok"]
    for path in (tmp_path / "out" / "a_denoised.fits", large):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path


def test_rerun_removes_temporaries_of_a_killed_write(tmp_path, model_file, client):
    # issue 11: a SIGKILL during a write left .astro-unet-* files no rerun removed
    from astro_unet._utils import TEMP_PREFIX, _host_tag

    src = write_mef(tmp_path / "a.fits")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"{TEMP_PREFIX}{_host_tag()}-999999999-0123abcd-a_denoised.fits"
    stale.write_bytes(b"SIMPLE  =                    T")
    table = denoise_files([src], out, ratio=2, model=model_file, client=client,
                          device="cpu", tile_size=32, overlap=8)
    assert list(table["status"]) == ["ok"]
    assert names(out) == ["a_denoised.fits"]
    # also when the output exists and is skipped
    stale.write_bytes(b"SIMPLE  =                    T")
    table = denoise_files([src], out, ratio=2, model=model_file, client=client,
                          device="cpu", tile_size=32, overlap=8)
    assert list(table["status"]) == ["skipped"]
    assert names(out) == ["a_denoised.fits"]


def test_truncated_file_is_named(tmp_path, model_file, client):
    # issue 11: "TypeError: buffer is too small for requested array"
    src = write_mef(tmp_path / "a.fits")
    data = src.read_bytes() if hasattr(src, "read_bytes") else open(src, "rb").read()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(data[:-5000])
    table = denoise_files([cut], tmp_path / "out", ratio=2, model=model_file, client=client,
                          device="cpu", tile_size=32, overlap=8)
    assert table["status"][0].startswith(f"error: {cut} is truncated (File may have been")
    with pytest.raises(ValueError, match=f"{cut} is truncated"):
        denoise_large(cut, ratio=2, model=model_file, device="cpu")


def _run_script(path, text):
    import subprocess
    import sys

    path.write_text(text)
    here = os.path.dirname(os.path.dirname(astro_unet.weights.__file__))
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=300, cwd=path.parent, env={**os.environ, "PYTHONPATH": here})


def test_script_without_main_guard_is_detected(tmp_path, model_file):
    # issue 11: screens of traceback ending in "Nanny failed to start" and an empty
    # output folder
    write_mef(tmp_path / "a.fits")
    run = _run_script(tmp_path / "script.py", (
        "from astro_unet import denoise_files\n"
        f"denoise_files(['a.fits'], 'out', ratio=2, model={str(model_file)!r}, device='cpu')\n"))
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: denoise_files was called at the top level of the "
                           f"script {tmp_path / 'script.py'} (line 2).")
    assert "if __name__ == \"__main__\":" in last and "client=" in last
    assert "Nanny" not in run.stderr
    assert names(tmp_path) == ["a.fits", "script.py"]  # no output folder


def test_unguarded_main_call_helper(tmp_path, monkeypatch):
    import sys
    import types

    probe = ("from astro_unet._utils import unguarded_main_call\n"
             "def f():\n"
             "    return unguarded_main_call()\n")
    path = tmp_path / "script.py"
    cases = {
        "top": (probe + "result = f()\n", (str(path), 4)),
        "guarded": (probe + "if __name__ == '__main__':\n    result = f()\n", None),
        "reversed": (probe + "if '__main__' == __name__:\n    x = 1\n    result = f()\n",
                     None),
        "other if": (probe + "if True:\n    result = f()\n", (str(path), 5)),
    }
    for name, (text, expected) in cases.items():
        path.write_text(text)
        main = types.ModuleType("__main__")
        main.__file__ = str(path)
        monkeypatch.setitem(sys.modules, "__main__", main)
        exec(compile(text, str(path), "exec"), main.__dict__)  # runs as a main script
        assert main.result == expected, name
    # no script (interactive session, notebook, python -c)
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    from astro_unet._utils import unguarded_main_call

    assert unguarded_main_call() is None
