# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of the model registry, the astropy-cache downloads and the checksums."""

import functools
import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from astropy.utils import data as astropy_data

from astro_unet import conf, weights
from astro_unet.model import AstroUNet, ModelFileError, save_model
from astro_unet.weights import (ModelChecksumError, ModelInfo, ModelUnavailableError,
                                get_model_path, list_models, load_model, register_model,
                                verify_model)

PKG = weights.PKGNAME
NORMALIZATION = {"unit": "electron", "transform": "asinh", "scale": 10.0}


@pytest.fixture(autouse=True)
def astro_unet_cache(tmp_path_factory, monkeypatch):
    """An empty astropy download cache for the package ``astro_unet`` (not only ``astropy``)."""
    from astropy.config import paths

    base = tmp_path_factory.mktemp("astro_unet_cache")
    if hasattr(paths, "temporary_cache_dir_path"):
        with paths.temporary_cache_dir_path(base, namespace=PKG, delete=False) as path:
            yield Path(path)
    else:  # pragma: no cover - astropy < 8 honours XDG_CACHE_HOME/<pkgname>
        (base / PKG).mkdir()
        monkeypatch.setenv("XDG_CACHE_HOME", str(base))
        yield base / PKG


@pytest.fixture(autouse=True)
def clean_registry():
    """Restore the registry and the default alias after each test."""
    saved, aliases = dict(weights.REGISTRY), dict(weights._ALIASES)
    yield
    weights.REGISTRY.clear()
    weights.REGISTRY.update(saved)
    weights._ALIASES.clear()
    weights._ALIASES.update(aliases)


class QuietHandler(SimpleHTTPRequestHandler):
    requests = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server serving ``tmp_path/'www'``: ``(root, base_url, requests)``."""
    root = tmp_path / "www"
    root.mkdir()
    requests = []
    handler = type("Handler", (QuietHandler,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    """The bytes of a tiny valid model file and their sha256."""
    torch.manual_seed(0)
    net = AstroUNet(base_channels=4, depth=2)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    digest = save_model(net, path, normalization=NORMALIZATION,
                        metadata={"name": "tiny", "description": "test model"})
    content = path.read_bytes()
    assert hashlib.sha256(content).hexdigest() == digest
    return content, digest


def model_row(name):
    table = list_models()
    return table[list(table["name"]).index(name)]


def make_info(name="tiny", sha256="0" * 64, **kwargs):
    return ModelInfo(name=name, filename=f"{name}.pt", sha256=sha256, **kwargs)


# --------------------------------------------------------------------------
# ModelInfo and the registry


class TestModelInfo:
    def test_normalizes_fields(self):
        info = ModelInfo(name="a", filename="a.pt", sha256="AB" * 32, ratios=[2, 3.5],
                         instruments="WFC3/UVIS", units=["electron"])
        assert info.sha256 == "ab" * 32
        assert info.ratios == (2.0, 3.5)
        assert info.instruments == ("WFC3/UVIS",)
        assert info.units == ("electron",)
        assert info.bundled is False

    def test_dict_round_trip(self):
        info = make_info(description="d", training="t", ratios=(2, 3), version="2")
        again = ModelInfo.from_dict(json.loads(json.dumps(info.to_dict())))
        assert again == info

    @pytest.mark.parametrize("kwargs, match", [
        (dict(name="a b"), "Invalid model name"),
        (dict(name="../x"), "Invalid model name"),
        (dict(filename="dir/a.pt"), "bare file name"),
        (dict(sha256="xyz"), "64 hex digits"),
        (dict(ratios=["two"]), "ratios"),
    ])
    def test_invalid(self, kwargs, match):
        base = dict(name="a", filename="a.pt", sha256="0" * 64)
        base.update(kwargs)
        with pytest.raises(ValueError, match=match):
            ModelInfo(**base)

    def test_from_dict_rejects_unknown_and_missing(self):
        with pytest.raises(ValueError, match="Unknown model registry field"):
            ModelInfo.from_dict({"name": "a", "filename": "a.pt", "sha256": "0" * 64,
                                 "sha": "x"})
        with pytest.raises(ValueError, match="lacks"):
            ModelInfo.from_dict({"name": "a", "filename": "a.pt"})

    def test_urls_from_conf(self):
        info = make_info()
        with conf.set_temp("weights_base_urls", ["http://a.example/w", "http://b.example/"]):
            assert info.download_urls == ("http://a.example/w/tiny.pt",
                                          "http://b.example/tiny.pt")
            assert info.cache_key == "http://a.example/w/tiny.pt"
        explicit = make_info(urls=["http://c.example/x.pt"])
        assert explicit.cache_key == "http://c.example/x.pt"


def test_shipped_registry_is_valid():
    text = (Path(weights.__file__).parent / "data" / "models" / "registry.json").read_text()
    content = json.loads(text)
    assert content["format"] == "astro_unet-registry"
    assert {m["name"] for m in content["models"]} == set(weights.REGISTRY)
    assert weights._ALIASES["default"] == content["default"]


def test_register_model():
    info = register_model({"name": "mine", "filename": "mine.pt", "sha256": "1" * 64})
    assert weights.REGISTRY["mine"] is info
    with pytest.raises(ValueError, match="already registered"):
        register_model(make_info("mine"))
    replaced = register_model(make_info("mine", description="v2"), overwrite=True)
    assert weights.REGISTRY["mine"].description == "v2" == replaced.description
    with pytest.raises(ValueError, match="reserved"):
        register_model(make_info("default"))
    with pytest.raises(TypeError, match="ModelInfo or dict"):
        register_model("mine")


def test_no_default_model_message():
    with conf.set_temp("default_model", "default"):
        weights._ALIASES["default"] = None
        with pytest.raises(ValueError, match="No default astro_unet model is registered") as exc:
            load_model()
        assert "--model" in str(exc.value) and "load_model('my_model.pt')" in str(exc.value)
        with pytest.raises(ValueError, match="No default"):
            get_model_path("default")


def test_unknown_name_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        load_model("nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(TypeError, match="registry name or a path"):
        load_model(3.5)


def test_list_models(model_bytes, tmp_path):
    table = list_models()
    assert table.colnames[:6] == ["name", "version", "default", "bundled", "cached", "sha256"]
    assert len(table) == len(weights.REGISTRY)

    content, digest = model_bytes
    info = register_model(make_info(sha256=digest, ratios=(2, 3, 4, 5),
                                    description="a tiny test model"), default=True)
    row = model_row("tiny")
    assert row["default"] and not row["cached"] and not row["bundled"]
    assert row["sha256"] == digest[:12]
    assert row["ratios"] == "2,3,4,5"
    assert row["description"] == "a tiny test model"
    src = tmp_path / "tiny.pt"
    src.write_bytes(content)
    astropy_data.import_file_to_cache(info.cache_key, str(src), pkgname=PKG)
    assert model_row("tiny")["cached"]


# --------------------------------------------------------------------------
# cache, downloads, checksums


def test_cache_hit_needs_no_network(model_bytes, tmp_path, http_server):
    content, digest = model_bytes
    root, base, requests = http_server
    with conf.set_temp("weights_base_urls", [base]):
        info = register_model(make_info(sha256=digest))
        src = tmp_path / "tiny.pt"
        src.write_bytes(content)
        astropy_data.import_file_to_cache(info.cache_key, str(src), pkgname=PKG)
        path = get_model_path("tiny", allow_internet=False)
        assert Path(path).read_bytes() == content
        model, meta = load_model("tiny", allow_internet=False)
    assert requests == []  # nothing was asked of the server
    assert isinstance(model, AstroUNet) and not model.training
    assert meta["name"] == "tiny" and meta["sha256"] == digest and meta["path"] == path
    assert meta["model_info"] is info
    assert meta["normalization"] == NORMALIZATION
    assert meta["metadata"]["description"] == "test model"


def test_download_from_loopback_server(model_bytes, http_server):
    content, digest = model_bytes
    root, base, requests = http_server
    (root / "tiny.pt").write_bytes(content)
    with conf.set_temp("weights_base_urls", [base]):
        info = register_model(make_info(sha256=digest))
        assert not astropy_data.is_url_in_cache(info.cache_key, pkgname=PKG,
                                                on_missing="ignore")
        path = get_model_path("tiny", allow_internet=True)
        assert Path(path).read_bytes() == content
        assert astropy_data.is_url_in_cache(base + "tiny.pt", pkgname=PKG)
        assert requests == ["/tiny.pt"]
        # second call: from the cache, even with downloads off
        assert get_model_path("tiny", allow_internet=False) == path
        model, meta = load_model("tiny")
        assert requests == ["/tiny.pt"]
        assert meta["sha256"] == digest and verify_model("tiny")


def test_mirror_fallback_uses_primary_cache_key(model_bytes, http_server):
    content, digest = model_bytes
    root, base, requests = http_server
    (root / "mirror").mkdir()
    (root / "mirror" / "tiny.pt").write_bytes(content)
    with conf.set_temp("weights_base_urls", [base + "primary/", base + "mirror/"]):
        info = register_model(make_info(sha256=digest))
        path = get_model_path("tiny", allow_internet=True)
        assert Path(path).read_bytes() == content
        # stored under the primary URL, not the mirror's
        assert info.cache_key == base + "primary/tiny.pt"
    assert requests == ["/primary/tiny.pt", "/mirror/tiny.pt"]
    assert astropy_data.is_url_in_cache(base + "primary/tiny.pt", pkgname=PKG)
    assert not astropy_data.is_url_in_cache(base + "mirror/tiny.pt", pkgname=PKG)


def test_corrupt_mirror_falls_back_to_next(model_bytes, http_server):
    content, digest = model_bytes
    root, base, requests = http_server
    for sub, body in (("bad", content[:-10] + b"0123456789"), ("good", content)):
        (root / sub).mkdir()
        (root / sub / "tiny.pt").write_bytes(body)
    with conf.set_temp("weights_base_urls", [base + "bad/", base + "good/"]):
        register_model(make_info(sha256=digest))
        path = get_model_path("tiny", allow_internet=True)
    assert Path(path).read_bytes() == content
    assert requests == ["/bad/tiny.pt", "/good/tiny.pt"]


def test_all_sources_fail(http_server):
    root, base, requests = http_server
    with conf.set_temp("weights_base_urls", [base + "a/", base + "b/"]):
        info = register_model(make_info())
        with pytest.raises(ModelUnavailableError, match="Could not download model 'tiny'") as exc:
            get_model_path("tiny", allow_internet=True)
    assert "HTTP error 404" in str(exc.value) and base + "b/tiny.pt" in str(exc.value)
    assert not astropy_data.is_url_in_cache(info.cache_key, pkgname=PKG, on_missing="ignore")


def test_hash_mismatch_removes_cache_entry(model_bytes, http_server):
    content, digest = model_bytes
    root, base, requests = http_server
    (root / "tiny.pt").write_bytes(content)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with conf.set_temp("weights_base_urls", [base]):
        info = register_model(make_info(sha256=wrong))
        with pytest.raises(ModelChecksumError, match="registered sha256 " + wrong[:12]):
            load_model("tiny", allow_internet=True)
        assert not astropy_data.is_url_in_cache(info.cache_key, pkgname=PKG)
        # a corrupted file already in the cache is caught on load and removed too
        register_model(make_info(sha256=digest), overwrite=True)
        get_model_path("tiny", allow_internet=True)
        cached = astropy_data.download_file(info.cache_key, cache=True, sources=[],
                                            pkgname=PKG)
        Path(cached).write_bytes(content[: len(content) // 2])
        assert verify_model("tiny") is False
        assert not astropy_data.is_url_in_cache(info.cache_key, pkgname=PKG)
        get_model_path("tiny", allow_internet=True)
        Path(cached).write_bytes(b"garbage")
        with pytest.raises(ModelChecksumError, match="cached copy was removed"):
            load_model("tiny", allow_internet=False)
        assert not astropy_data.is_url_in_cache(info.cache_key, pkgname=PKG)


def test_truncated_file_with_matching_hash_is_a_model_file_error(model_bytes, http_server):
    content, _ = model_bytes
    root, base, requests = http_server
    truncated = content[: len(content) // 2]
    (root / "tiny.pt").write_bytes(truncated)
    with conf.set_temp("weights_base_urls", [base]):
        register_model(make_info(sha256=hashlib.sha256(truncated).hexdigest()))
        with pytest.raises(ModelFileError, match="tiny"):
            load_model("tiny", allow_internet=True)


def test_offline_miss(model_bytes, http_server):
    root, base, requests = http_server
    (root / "tiny.pt").write_bytes(model_bytes[0])
    with conf.set_temp("weights_base_urls", [base]):
        register_model(make_info(sha256=model_bytes[1]))
        with pytest.raises(ModelUnavailableError,
                           match="allow_internet=False.*astro-unet models --download tiny"):
            load_model("tiny", allow_internet=False)
        # the default follows astropy's own switch
        with astropy_data.conf.set_temp("allow_internet", False):
            with pytest.raises(ModelUnavailableError, match="not in the astropy download cache"):
                get_model_path("tiny")
            # an explicit True overrides it
            assert Path(get_model_path("tiny", allow_internet=True)).read_bytes() == \
                model_bytes[0]
    assert requests == ["/tiny.pt"]
    register_model(make_info("other"))
    with pytest.raises(ModelUnavailableError, match="nothing to verify"):
        verify_model("other")


def test_bundled_model_imported_offline(model_bytes, tmp_path, monkeypatch):
    content, digest = model_bytes
    shipped = tmp_path / "pkgdata"
    shipped.mkdir()
    (shipped / "tiny.pt").write_bytes(content)
    monkeypatch.setattr(weights, "_bundled_path", lambda info: shipped / info.filename)
    with conf.set_temp("weights_base_urls", ["http://192.0.2.1/never/"]):
        info = register_model(make_info(sha256=digest, bundled=True), default=True)
        assert verify_model("tiny")  # bundled file checked before import
        with conf.set_temp("default_model", "default"):
            model, meta = load_model(allow_internet=False)
        assert meta["name"] == "tiny"
        assert astropy_data.is_url_in_cache(info.cache_key, pkgname=PKG)
        # the package file was copied, not moved
        assert (shipped / "tiny.pt").read_bytes() == content
        assert Path(meta["path"]).read_bytes() == content
        assert model_row("tiny")["cached"]
        # a bad bundled file
        (shipped / "tiny.pt").write_bytes(b"broken")
        astropy_data.clear_download_cache(info.cache_key, pkgname=PKG)
        assert verify_model("tiny") is False
        with pytest.raises(ModelChecksumError, match="bundled file"):
            get_model_path("tiny", allow_internet=False)
        assert not astropy_data.is_url_in_cache(info.cache_key, pkgname=PKG)


# --------------------------------------------------------------------------
# local files


def test_load_local_file(model_bytes, tmp_path):
    content, digest = model_bytes
    path = tmp_path / "own_model.pt"
    path.write_bytes(content)
    for arg in (path, str(path)):
        model, meta = load_model(arg)
        assert meta["name"] == "own_model" and meta["sha256"] == digest
        assert meta["path"] == str(path) and meta["model_info"] is None
        assert meta["config"] == model.config
    x = torch.zeros(1, 1, 8, 8)
    with torch.no_grad():
        y = model(x, torch.tensor([[2.0]]))
    assert y.shape == x.shape
    # conf.default_model may be a path
    with conf.set_temp("default_model", str(path)):
        _, meta = load_model("default")
    assert meta["path"] == str(path)


def test_local_file_with_registered_name_is_checked(model_bytes, tmp_path):
    content, digest = model_bytes
    register_model(make_info("tiny", sha256=hashlib.sha256(b"other").hexdigest()))
    path = tmp_path / "tiny.pt"
    path.write_bytes(content)
    with pytest.raises(ModelChecksumError, match="registered model 'tiny'"):
        load_model(path)
    register_model(make_info("tiny", sha256=digest), overwrite=True)
    _, meta = load_model(path)
    assert meta["name"] == "tiny" and meta["model_info"] is weights.REGISTRY["tiny"]


def test_local_invalid_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="junk.pt"):
        load_model(path)


def test_bundled_default_denoises_offline():
    """A fresh install: the bundled default loads from the package without a network."""
    import numpy as np
    from astropy.utils.data import conf as data_conf

    from astro_unet import denoise_ccd, load_sample_image, simulate_short_exposure

    name = weights._ALIASES["default"]
    assert name is not None and weights.REGISTRY[name].bundled
    with data_conf.set_temp("allow_internet", False):
        net, info = load_model("default")
        assert info["sha256"] == weights.REGISTRY[name].sha256
        assert verify_model(name)
        short = simulate_short_exposure(load_sample_image(), 2, seed=3)
        out = denoise_ccd(short, ratio=2, device="cpu")
    assert out.meta["DNMODEL"] == name
    assert np.isfinite(out.data).all()
    # flux is kept: the summed image changes by well under a per cent
    assert abs(out.data.sum() / short.data.sum() - 1) < 0.01


def test_bundled_model_used_in_place_when_the_cache_is_read_only(model_bytes, tmp_path,
                                                                 monkeypatch, caplog):
    # issue 11: a read-only HOME gave "Read-only file system" with no hint
    import errno

    content, digest = model_bytes
    shipped = tmp_path / "pkgdata"
    shipped.mkdir()
    (shipped / "tiny.pt").write_bytes(content)
    monkeypatch.setattr(weights, "_bundled_path", lambda info: shipped / info.filename)
    monkeypatch.setattr(weights, "_told_read_only", set())

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "/home/user/.cache")

    monkeypatch.setattr(astropy_data, "import_file_to_cache", read_only)
    monkeypatch.setattr(astropy_data, "is_url_in_cache", read_only)
    register_model(make_info(sha256=digest, bundled=True))
    with caplog.at_level("INFO", logger="astro_unet"):
        assert get_model_path("tiny", allow_internet=False) == str(shipped / "tiny.pt")
        model, meta = load_model("tiny", allow_internet=False)
    assert meta["path"] == str(shipped / "tiny.pt") and meta["sha256"] == digest
    assert "not writable (Read-only file system: /home/user/.cache)" in caplog.text
    assert "XDG_CACHE_HOME" in caplog.text
    assert not model_row("tiny")["cached"]
    # the bundled file is still checked
    (shipped / "tiny.pt").write_bytes(b"broken")
    with pytest.raises(ModelChecksumError, match="reinstall astro_unet"):
        get_model_path("tiny", allow_internet=False)


def test_read_only_home_end_to_end(tmp_path):
    """The shipped default model loads with HOME on a read-only file system (Linux)."""
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare")
    home = tmp_path / "home"
    home.mkdir()
    here = os.path.dirname(os.path.dirname(weights.__file__))
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(HOME=str(home), PYTHONPATH=here, MPLCONFIGDIR=str(tmp_path / "mpl"))
    probe = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount --bind {home} {home} && mount -o remount,bind,ro {home}"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces (unshare -rm) are not available")
    code = "from astro_unet import get_model_path; print(get_model_path())"
    run = subprocess.run(["unshare", "-rm", "sh", "-c",
                          f"mount --bind {home} {home} && mount -o remount,bind,ro {home} && "
                          f"{sys.executable} -c \"{code}\""],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    path = run.stdout.strip().splitlines()[-1]
    assert os.path.dirname(path) == os.path.join(here, "astro_unet", "data", "models")
    assert "using the bundled model file" in run.stdout + run.stderr
