# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_unet.model: architecture, receptive field, file format."""

import hashlib
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from astro_unet.model import (  # noqa: E402
    DEFAULT_CONFIG, PAPER_CONFIG, AstroUNet, ModelFileError, UNetConfig,
    effective_receptive_field, load_model_file, save_model,
)

NORM = {"unit": "electron", "transform": "asinh", "scale": 10.0}


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test of this module on one torch thread (see conftest.py)."""


def tiny(**kw):
    torch.manual_seed(0)
    kw.setdefault("base_channels", 4)
    kw.setdefault("depth", 3)
    return AstroUNet(**kw)


def test_paper_and_default_configs():
    assert PAPER_CONFIG.channels == (32, 64, 128, 256, 512)
    assert PAPER_CONFIG.convs_per_level == 2
    assert PAPER_CONFIG.negative_slope == 0.2
    assert PAPER_CONFIG.cond_names == ("ratio",)
    assert not PAPER_CONFIG.residual
    assert DEFAULT_CONFIG.depth == 5 and DEFAULT_CONFIG.residual
    net = AstroUNet()
    assert net.config == PAPER_CONFIG
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(m.kernel_size == (3, 3) for m in convs) == 2 * 5 + 2 * 4
    assert net.head.kernel_size == (1, 1)
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 4 and all(m.kernel_size == (2, 2) and m.stride == (2, 2) for m in ups)
    # the ratio channel enters the first decoder stage only
    assert net.decoders[0][0].in_channels == 2 * 256 + 1
    assert net.decoders[1][0].in_channels == 2 * 128


def test_config_roundtrip_and_validation():
    cfg = UNetConfig(base_channels=8, depth=3, cond_names=["ratio", "read_noise"],
                     out_channels=2, residual=True)
    assert cfg.cond_names == ("ratio", "read_noise")
    d = cfg.to_dict()
    assert d["cond_names"] == ["ratio", "read_noise"]
    assert UNetConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown UNetConfig keys"):
        UNetConfig.from_dict({**d, "dropout": 0.1})
    with pytest.raises(ValueError, match="depth"):
        UNetConfig(depth=1)
    with pytest.raises(ValueError, match="out_channels"):
        UNetConfig(out_channels=3)
    with pytest.raises(ValueError, match="base_channels"):
        UNetConfig(base_channels=0)
    with pytest.raises(ValueError, match="cond_names"):
        UNetConfig(cond_names=("ratio", "ratio"))
    with pytest.raises(ValueError, match="residual"):
        UNetConfig(residual=1)
    assert AstroUNet(cfg, base_channels=4).config.base_channels == 4


def test_forward_shapes_and_errors():
    net = tiny(out_channels=2)
    y = net(torch.zeros(3, 1, 24, 40), torch.full((3, 1), 2.0))
    assert tuple(y.shape) == (3, 2, 24, 40) and y.dtype == torch.float32
    # a 1-D cond is broadcast over the batch
    y1 = net(torch.zeros(3, 1, 24, 40), torch.tensor([2.0]))
    assert torch.equal(y, y1)
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.zeros(1, 1, 18, 16), torch.tensor([[2.0]]))
    with pytest.raises(ValueError, match="conditioning"):
        net(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="cond must have shape"):
        net(torch.zeros(2, 1, 16, 16), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.zeros(1, 2, 16, 16), torch.tensor([[2.0]]))
    # no conditioning at all
    free = tiny(cond_names=())
    assert tuple(free(torch.zeros(1, 1, 16, 16)).shape) == (1, 1, 16, 16)


def test_ratio_conditions_the_output():
    net = tiny()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        a = net(x, torch.tensor([[2.0]]))
        b = net(x, torch.tensor([[5.0]]))
    assert (a - b).abs().max() > 1e-4


def test_residual_with_zero_head_is_identity():
    net = tiny(residual=True, out_channels=2)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        x = torch.randn(2, 1, 16, 32)
        y = net(x, torch.full((2, 1), 3.0))
    assert torch.equal(y[:, :1], x)
    assert torch.equal(y[:, 1:], torch.zeros_like(x))
    assert effective_receptive_field(net) == 0


def test_receptive_field_matches_gradient_support():
    net = tiny()
    rf = net.receptive_field
    assert rf == 44
    size = 96
    widths = []
    for k in range(net.size_multiple):
        x = torch.randn(1, 1, size, size, requires_grad=True)
        c = size // 2 + k
        out = net(x, torch.tensor([[2.0]]))[0, 0, c, c]
        (g,) = torch.autograd.grad(out, x)
        rows = torch.nonzero(g[0, 0].abs().sum(1))
        widths.append(int(rows.max() - rows.min() + 1))
    assert max(widths) == rf
    assert UNetConfig(depth=4, convs_per_level=1).receptive_field == 54
    assert PAPER_CONFIG.receptive_field == 204


def test_effective_receptive_field_is_deterministic_and_inside_rf():
    net = tiny()
    r = effective_receptive_field(net)
    assert 0 < r < net.receptive_field // 2
    assert effective_receptive_field(net) == r
    assert effective_receptive_field(net, fraction=0.999) >= r
    assert effective_receptive_field(net, fraction=0.5) < r
    # parameters get no gradients
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="fraction"):
        effective_receptive_field(net, fraction=0)


def test_autocast_keeps_float32_output():
    net = tiny(residual=True)
    x = torch.randn(1, 1, 32, 32)
    c = torch.tensor([[2.0]])
    with torch.no_grad():
        ref = net(x, c)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x, c)
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("half", [False, True])
def test_save_load_roundtrip(tmp_path, half):
    net = tiny(out_channels=2, cond_names=("ratio", "log_exptime"))
    meta = {"name": "tiny", "version": "0.1", "training": {"seed": 1}}
    path = tmp_path / "tiny.pt"
    digest = save_model(net, path, normalization=NORM, metadata=meta, half=half)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(os.listdir(tmp_path)) == ["tiny.pt"]          # no temporary left
    loaded, info = load_model_file(path)
    assert info["config"] == net.config
    assert info["normalization"] == NORM and info["metadata"] == meta
    assert info["sha256"] == digest and info["format_version"] == 1
    assert loaded.normalization == NORM and loaded.metadata == meta
    assert not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 1, 16, 16)
    c = torch.tensor([[2.0, 1.5]])
    with torch.no_grad():
        a, b = net(x, c), loaded(x, c)
    if half:
        assert (a - b).abs().max() < 1e-2 * a.abs().max()
        payload = torch.load(path, weights_only=True)
        assert payload["state_dict"]["head.weight"].dtype == torch.float16
    else:
        assert torch.equal(a, b)


def _write(path, payload):
    torch.save(payload, path)
    return path


def test_corrupt_and_invalid_files(tmp_path):
    net = tiny()
    good = tmp_path / "good.pt"
    save_model(net, good, normalization=NORM)
    payload = torch.load(good, weights_only=True)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a model" * 10)
    cases = {
        truncated: "unreadable",
        garbage: "unreadable",
        tmp_path / "missing.pt": "does not exist",
        _write(tmp_path / "list.pt", [1, 2]): "does not hold a dict",
        _write(tmp_path / "fmt.pt", {**payload, "format": "other"}): "has format",
        _write(tmp_path / "ver.pt", {**payload, "format_version": 99}): "format_version 99",
        _write(tmp_path / "keys.pt", {k: v for k, v in payload.items()
                                      if k != "normalization"}): "lacks",
        _write(tmp_path / "cfg.pt", {**payload, "config": {**payload["config"], "depth": 0}}):
            "invalid config",
        _write(tmp_path / "shape.pt", {**payload, "config": {**payload["config"],
                                                             "base_channels": 8}}):
            "do not match",
        _write(tmp_path / "nan.pt", {**payload, "state_dict": {
            **payload["state_dict"],
            "head.bias": torch.full_like(payload["state_dict"]["head.bias"], float("nan"))}}):
            "non-finite",
    }
    for path, message in cases.items():
        with pytest.raises(ModelFileError, match=message) as err:
            load_model_file(path)
        assert os.path.basename(str(path)) in str(err.value)
    assert issubclass(ModelFileError, ValueError)


def test_save_model_arguments(tmp_path):
    with pytest.raises(TypeError, match="AstroUNet"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x.pt", normalization=NORM)
    with pytest.raises(TypeError, match="normalization"):
        save_model(tiny(), tmp_path / "x.pt", normalization="asinh")
    # overwriting an existing file is atomic and leaves a valid file
    path = tmp_path / "m.pt"
    save_model(tiny(), path, normalization=NORM)
    net2 = tiny(base_channels=8)
    save_model(net2, path, normalization=NORM)
    assert load_model_file(path)[1]["config"].base_channels == 8
    assert np.array_equal(sorted(os.listdir(tmp_path)), ["m.pt"])


def test_save_model_honours_the_umask(tmp_path):
    # issue 11: tempfile.mkstemp made every model file mode 0600
    import stat

    old = os.umask(0o022)
    try:
        save_model(tiny(), tmp_path / "m.pt", normalization=NORM)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.pt").st_mode) == 0o644


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
@pytest.mark.parametrize("where", ["cuda", "cuda:0"])
def test_cuda_map_location_without_cuda(tmp_path, where):
    # issue 11: load_model(map_location="cuda") called a valid file "unreadable
    # (truncated, corrupt or not a torch file)"
    from astro_unet import load_model

    path = tmp_path / "m.pt"
    save_model(tiny(), path, normalization=NORM)
    for location in (where, torch.device(where)):
        with pytest.raises(RuntimeError, match="CUDA is not available.*map_location='cpu'"):
            load_model_file(path, map_location=location)
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            load_model(path, map_location=location)


def test_map_location_not_a_device(tmp_path):
    path = tmp_path / "m.pt"
    save_model(tiny(), path, normalization=NORM)
    with pytest.raises(ValueError, match="is not a torch device"):
        load_model_file(path, map_location="gpu0")
