# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_unet.denoise.denoise_ccd with tiny networks."""

import hashlib
import math
import subprocess
import sys
from copy import deepcopy

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.wcs import WCS

torch = pytest.importorskip("torch")

from astro_unet import denoise_ccd  # noqa: E402
from astro_unet import _inference  # noqa: E402
from astro_unet import denoise as dn  # noqa: E402
from astro_unet._normalization import background_noise  # noqa: E402
from astro_unet._plan import long_exposure_factor  # noqa: E402
from astro_unet.model import AstroUNet, ModelFileError, save_model  # noqa: E402

RATIO = 2.5
EXPTIME = 120.0


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test of this module on one torch thread (see conftest.py)."""


class IdentityNet(AstroUNet):
    """Returns its input (after the usual input checks); records the conditioning."""

    calls = []

    def forward(self, x, cond=None):
        cond = self._check_input(x, cond)
        IdentityNet.calls.append(None if cond is None else cond.detach().cpu().clone())
        return x.float().clone()


def zero_head_net(**kw):
    """A real residual U-net whose output layer is zero: the identity."""
    torch.manual_seed(0)
    net = AstroUNet(base_channels=4, depth=3, residual=True, **kw)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
    return net


def random_net(**kw):
    torch.manual_seed(1)
    return AstroUNet(base_channels=4, depth=3, residual=True, **kw)


def star_field(shape=(70, 90), seed=0, sky=20.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, sky)
    for _ in range(6):
        y0, x0 = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        image += rng.uniform(200, 5000) * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / 4.0)
    return rng.poisson(image).astype(float)


def make_wcs(shape):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-1e-5, 1e-5]
    return w


def make_ccd(unit="electron/s", shape=(70, 90), header=True, cls=CCDData, **meta):
    electrons = star_field(shape)
    scale = {"electron": 1.0, "electron / s": 1 / EXPTIME, "adu": 1 / 2.0,
             "adu / s": 1 / (2.0 * EXPTIME)}[str(u.Unit(unit))]
    values = {"EXPTIME": EXPTIME, "GAIN": 2.0, "OBJECT": "test field"}
    values.update(meta)
    if header:
        hdr = fits.Header()
        for key, value in values.items():
            hdr[key] = value
    else:
        hdr = dict(values)
    kwargs = dict(unit=unit, meta=hdr)
    if cls is CCDData:
        kwargs["wcs"] = make_wcs(shape)
    return cls(electrons * scale, **kwargs)


def kw(meta, key):
    value = meta[key]
    return value[0] if isinstance(value, tuple) else value


def snapshot(ccd):
    return (np.array(ccd.data, copy=True),
            None if ccd.mask is None else np.array(ccd.mask, copy=True),
            deepcopy(ccd.meta),
            None if ccd.uncertainty is None else np.array(ccd.uncertainty.array, copy=True))


def assert_unchanged(ccd, snap):
    data, mask, meta, unc = snap
    np.testing.assert_array_equal(ccd.data, data)
    if mask is None:
        assert ccd.mask is None
    else:
        np.testing.assert_array_equal(ccd.mask, mask)
    assert dict(ccd.meta) == dict(meta)
    if unc is not None:
        np.testing.assert_array_equal(ccd.uncertainty.array, unc)


@pytest.mark.parametrize("unit", ["electron/s", "electron", "adu", "adu/s"])
@pytest.mark.parametrize("maker", [zero_head_net, lambda: IdentityNet(base_channels=4, depth=3)])
def test_identity_model_returns_input_in_every_unit(unit, maker):
    ccd = make_ccd(unit)
    snap = snapshot(ccd)
    out = denoise_ccd(ccd, ratio=RATIO, model=maker(), device="cpu", tile_size=32)
    assert isinstance(out, CCDData) and out.unit == ccd.unit
    # rates stay rates; counts become the counts of the r times longer exposure
    factor = 1.0 if "/ s" in str(ccd.unit) else RATIO
    expected = factor * ccd.data
    np.testing.assert_allclose(out.data, expected, rtol=2e-6, atol=1e-6 * expected.max())
    assert abs(out.data.sum() - expected.sum()) < 1e-6 * expected.sum()   # flux, no seams
    assert kw(out.meta, "EXPTIME") == EXPTIME * RATIO
    assert kw(out.meta, "DNTILE") == 32
    assert_unchanged(ccd, snap)


def test_wcs_header_and_history(tmp_path):
    ccd = make_ccd()
    net = random_net()
    out = denoise_ccd(ccd, ratio=RATIO, model=net, device="cpu", tile_size=32)
    assert out.wcs.to_header() == ccd.wcs.to_header()
    hdr = out.meta
    assert isinstance(hdr, fits.Header)
    assert hdr["OBJECT"] == "test field" and hdr["EXPTIME"] == EXPTIME * RATIO
    assert hdr["DNRATIO"] == RATIO and hdr["DNMODE"] == "feather"
    assert hdr["DNTILE"] == 32 and hdr["DNOVERLP"] == 16      # clamped to half the tile
    assert hdr["DNDEVICE"] == "cpu" and hdr["DNUNCERT"] == "poisson-estimate"
    assert hdr["DNMODEL"] == "in-memory"
    assert len(hdr["DNSHA256"]) == 64 and int(hdr["DNSHA256"], 16) >= 0
    assert any("denoise_ccd(ratio=2.5" in h for h in hdr["HISTORY"])
    assert hdr["DNSHAOF"] == "weights"
    # the keywords survive a FITS round trip (without "card too long" warnings)
    out.write(tmp_path / "out.fits")
    back = fits.getheader(tmp_path / "out.fits")
    assert back["DNRATIO"] == RATIO and back["DNSHA256"] == hdr["DNSHA256"]
    assert repr(hdr)
    # a real (random) network changes the image
    assert np.abs(out.data - ccd.data).max() > 0


def test_default_overlap_from_effective_receptive_field_and_model_hints():
    ccd = make_ccd(shape=(140, 150))
    out = denoise_ccd(ccd, ratio=2, model=random_net(), device="cpu", tile_size=96)
    assert kw(out.meta, "DNOVERLP") == dn.MIN_OVERLAP
    net = random_net()
    net.normalization = dict(dn.DEFAULT_NORMALIZATION, overlap=24, tile_size=64)
    out = denoise_ccd(ccd, ratio=2, model=net, device="cpu")
    assert kw(out.meta, "DNOVERLP") == 24 and kw(out.meta, "DNTILE") == 64


def test_mask_and_nan_handling():
    ccd = make_ccd()
    ccd.data[10, 10] = np.nan
    ccd.data[20, 30] = np.inf
    ccd.data[40:43, 50:53] = np.nan
    mask = np.zeros(ccd.shape, bool)
    mask[5, 60] = True
    mask[60:62, 5:8] = True
    ccd.mask = mask
    ccd.data[5, 60] = 1e9                   # a masked hot pixel must not leak
    snap = snapshot(ccd)
    out = denoise_ccd(ccd, ratio=RATIO, model=zero_head_net(), device="cpu", tile_size=32)
    nonfinite = ~np.isfinite(snap[0])
    np.testing.assert_array_equal(out.mask, mask | nonfinite)
    assert np.all(np.isnan(out.data[nonfinite]))
    good = ~(mask | nonfinite)
    assert np.all(np.isfinite(out.data[good]))
    np.testing.assert_allclose(out.data[good], ccd.data[good], rtol=2e-6, atol=1e-6)
    # masked pixels got the value of a nearest good neighbour, not the hot value
    assert out.data[5, 60] < 1e3
    assert_unchanged(ccd, snap)


def test_all_masked_or_nan_image_raises():
    ccd = make_ccd()
    ccd.mask = np.ones(ccd.shape, bool)
    with pytest.raises(ValueError, match="no finite, unmasked pixel"):
        denoise_ccd(ccd, ratio=2, model=zero_head_net(), device="cpu")
    ccd = make_ccd()
    ccd.data[:] = np.nan
    with pytest.raises(ValueError, match="no finite, unmasked pixel"):
        denoise_ccd(ccd, ratio=2, model=zero_head_net(), device="cpu")


def test_uncertainty_poisson_estimate_is_not_the_input():
    ccd = make_ccd("electron")
    ccd.uncertainty = StdDevUncertainty(np.full(ccd.shape, 123.0))
    ron = 3.0
    out = denoise_ccd(ccd, ratio=RATIO, model=zero_head_net(), device="cpu",
                      read_noise=ron * u.electron, estimate="mean")
    assert isinstance(out.uncertainty, StdDevUncertainty)
    assert not np.allclose(out.uncertainty.array, 123.0)
    # a long exposure of r*N electrons: sqrt(r N + RON^2) electrons
    expected = np.sqrt(np.maximum(RATIO * ccd.data, 0) + ron ** 2)
    np.testing.assert_allclose(out.uncertainty.array, expected, rtol=1e-5)
    assert kw(out.meta, "DNUNCERT") == "poisson-estimate"
    np.testing.assert_array_equal(ccd.uncertainty.array, 123.0)
    # the long estimate: the noise it carries, alpha * sqrt(var_in) in the output unit
    long = denoise_ccd(ccd, ratio=RATIO, model=zero_head_net(), device="cpu",
                       read_noise=ron * u.electron, estimate="long")
    noise = background_noise(ccd.data) * RATIO    # output unit: long-exposure counts
    level = np.median(ccd.data) * RATIO
    alpha, var_in = long_exposure_factor(long.data, ratio=RATIO, noise=noise,
                                         level=level, ron=ron * RATIO, factor=RATIO)
    np.testing.assert_allclose(long.uncertainty.array, alpha * np.sqrt(var_in), rtol=1e-4)
    # the extended estimate (default): var_in / r^2 plus (1 - 1/r) times the mean's sigma
    ext = denoise_ccd(ccd, ratio=RATIO, model=zero_head_net(), device="cpu",
                      read_noise=ron * u.electron)
    assert kw(ext.meta, "DNESTIM") == "extended"
    np.testing.assert_allclose(
        ext.uncertainty.array,
        np.sqrt(var_in / RATIO ** 2 + ((1 - 1 / RATIO) * out.uncertainty.array) ** 2),
        rtol=1e-4)


def test_long_exposure_factor_is_the_noise_of_a_real_long_exposure():
    # short exposure: sky s electrons, read noise R; long: r s electrons, same R
    s, R, r = 30.0, 8.0, 4.0
    for flux in (0.0, 200.0):
        alpha, var_in = long_exposure_factor(np.array([s + flux]), ratio=r,
                                             noise=math.sqrt(s + R ** 2), level=s,
                                             ron=R, factor=1.0)
        assert var_in[0] == pytest.approx(s + flux + R ** 2)
        # in the short exposure's units, the long one's variance is (r (s+f) + R^2) / r^2
        assert alpha[0] ** 2 * var_in[0] == pytest.approx((r * (s + flux) + R ** 2) / r ** 2)
    # no read noise: 1/sqrt(r); read noise only: 1/r; never outside those
    a0, _ = long_exposure_factor(np.array([s]), ratio=r, noise=math.sqrt(s), level=s,
                                 ron=0.0, factor=1.0)
    a1, _ = long_exposure_factor(np.array([s]), ratio=r, noise=R, level=s, ron=R,
                                 factor=1.0)
    # a read noise above the measured noise (e.g. correlated noise): read-noise limit
    a2, _ = long_exposure_factor(np.array([s]), ratio=r, noise=R, level=s, ron=2 * R,
                                 factor=1.0)
    assert a0[0] == pytest.approx(0.5) and a1[0] == pytest.approx(0.25)
    assert a2[0] == pytest.approx(0.25)


def test_uncertainty_from_model_channel():
    ccd = make_ccd("electron/s")
    net = zero_head_net(out_channels=2)     # log b = 0 -> b = 1 in asinh space
    out = denoise_ccd(ccd, ratio=RATIO, model=net, device="cpu", estimate="mean")
    scale = dn.DEFAULT_NORMALIZATION["scale"]
    y = np.arcsinh(ccd.data * EXPTIME / scale)
    expected = math.sqrt(2) * scale * np.cosh(y) / EXPTIME
    np.testing.assert_allclose(out.uncertainty.array, expected, rtol=1e-5)
    assert kw(out.meta, "DNUNCERT") == "model"
    # the long estimate: its noise plus (1 - alpha) times the network's error
    long = denoise_ccd(ccd, ratio=RATIO, model=net, device="cpu", estimate="long")
    x = np.asarray(ccd.data, float)              # rates: output unit = input unit
    alpha, var_in = long_exposure_factor(
        out.data, ratio=RATIO, noise=background_noise(x * EXPTIME) / EXPTIME,
        level=np.median(x), ron=0.0, factor=1.0 / EXPTIME)
    np.testing.assert_allclose(long.uncertainty.array,
                               np.sqrt(alpha ** 2 * var_in + ((1 - alpha) * expected) ** 2),
                               rtol=1e-4)
    assert kw(long.meta, "DNUNCERT") == "model"
    ext = denoise_ccd(ccd, ratio=RATIO, model=net, device="cpu")
    np.testing.assert_allclose(
        ext.uncertainty.array,
        np.sqrt(var_in / RATIO ** 2 + ((1 - 1 / RATIO) * expected) ** 2), rtol=1e-4)


def test_nddata_in_nddata_out():
    nd = make_ccd("electron", header=False, cls=NDData)
    out = denoise_ccd(nd, ratio=RATIO, model=zero_head_net(), device="cpu", tile_size=32)
    assert type(out) is NDData and out.unit == u.electron
    np.testing.assert_allclose(out.data, RATIO * nd.data, rtol=2e-6, atol=1e-5)
    assert kw(out.meta, "EXPTIME") == EXPTIME * RATIO
    assert kw(out.meta, "DNMODE") == "feather"
    assert nd.meta["EXPTIME"] == EXPTIME


def test_deterministic_on_cpu():
    ccd = make_ccd()
    a = denoise_ccd(ccd, ratio=3, model=random_net(), device="cpu", tile_size=32)
    b = denoise_ccd(ccd, ratio=3, model=random_net(), device="cpu", tile_size=32)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.uncertainty.array, b.uncertainty.array)


def test_paper_mode_equals_feather_mode_for_identity():
    ccd = make_ccd(shape=(300, 280))
    net = zero_head_net()
    paper = denoise_ccd(ccd, ratio=RATIO, model=net, device="cpu", mode="paper")
    feather = denoise_ccd(ccd, ratio=RATIO, model=net, device="cpu", tile_size=64)
    assert kw(paper.meta, "DNMODE") == "paper"
    assert kw(paper.meta, "DNTILE") == 256 and kw(paper.meta, "DNOVERLP") == 224
    np.testing.assert_allclose(paper.data, feather.data, rtol=1e-6, atol=1e-6)


def test_small_image_and_huge_tile():
    ccd = make_ccd("electron", shape=(5, 7))
    out = denoise_ccd(ccd, ratio=RATIO, model=zero_head_net(), device="cpu")
    np.testing.assert_allclose(out.data, RATIO * ccd.data, rtol=2e-6)
    ccd = make_ccd("electron", shape=(40, 50))
    out = denoise_ccd(ccd, ratio=RATIO, model=zero_head_net(), device="cpu",
                      tile_size=10 ** 6, batch_size=10 ** 3)
    assert kw(out.meta, "DNTILE") == 52                       # one tile: the padded image
    np.testing.assert_allclose(out.data, RATIO * ccd.data, rtol=2e-6)
    wide = make_ccd("electron", shape=(8, 2100))
    out = denoise_ccd(wide, ratio=RATIO, model=zero_head_net(), device="cpu", tile_size=10 ** 6)
    assert kw(out.meta, "DNTILE") == dn.MAX_TILE_SIZE
    np.testing.assert_allclose(out.data, RATIO * wide.data, rtol=2e-6)


def test_conditioning_values_passed_to_the_model():
    ccd = make_ccd("electron/s")
    net = IdentityNet(base_channels=4, depth=3, cond_names=("ratio", "log_exptime", "read_noise"))
    IdentityNet.calls.clear()
    denoise_ccd(ccd, ratio=4, model=net, device="cpu", read_noise=2.5)
    cond = IdentityNet.calls[0][0].numpy()
    np.testing.assert_allclose(cond, [4.0, math.log10(EXPTIME), 2.5], rtol=1e-6)
    # the read noise falls back to the model's normalization
    net.normalization = dict(dn.DEFAULT_NORMALIZATION, read_noise=3.1)
    IdentityNet.calls.clear()
    denoise_ccd(ccd, ratio=4, model=net, device="cpu")
    assert IdentityNet.calls[0][0, 2] == pytest.approx(3.1)
    odd = IdentityNet(base_channels=4, depth=3, cond_names=("ratio", "airmass"))
    with pytest.raises(ValueError, match="unknown conditioning values"):
        denoise_ccd(ccd, ratio=4, model=odd, device="cpu")
    # log_exptime needs an exposure time even for counts
    counts = CCDData(np.ones((16, 16)), unit="electron")
    with pytest.raises(ValueError, match="exposure time"):
        denoise_ccd(counts, ratio=4, model=net, device="cpu")


@pytest.mark.parametrize("norm", [
    {"unit": "electron", "transform": "anscombe", "read_noise": 3.0},
    {"unit": "electron", "transform": "linear", "scale": 50.0},
    {"unit": "electron/s", "transform": "asinh", "scale": 0.1},
])
def test_transforms_and_model_units_invert_exactly(norm):
    ccd = make_ccd("electron")
    net = zero_head_net()
    net.normalization = norm
    out = denoise_ccd(ccd, ratio=RATIO, model=net, device="cpu")
    np.testing.assert_allclose(out.data, RATIO * ccd.data, rtol=1e-5, atol=1e-3)


def test_anscombe_asymptotic_inverse_offset():
    ccd = make_ccd("electron")
    net = zero_head_net()
    net.normalization = {"unit": "electron", "transform": "anscombe", "read_noise": 0.0,
                         "inverse": "asymptotic"}
    out = denoise_ccd(ccd, ratio=RATIO, model=net, device="cpu", estimate="mean")
    # (y/2)^2 - 1/8 instead of the algebraic (y/2)^2 - 3/8
    np.testing.assert_allclose(out.data, RATIO * (ccd.data + 0.25), rtol=1e-5)


def test_bad_normalization():
    net = zero_head_net()
    ccd = make_ccd()
    for norm, message in [({"transform": "log"}, "transform"),
                          ({"unit": "adu", "transform": "asinh", "scale": 1.0}, "unit"),
                          ({"unit": "electron", "transform": "asinh"}, "scale"),
                          ({"transform": "anscombe", "inverse": "exact"}, "inverse")]:
        net.normalization = norm
        with pytest.raises(ValueError, match=message):
            denoise_ccd(ccd, ratio=2, model=net, device="cpu")


def test_bad_inputs():
    net = zero_head_net()
    ccd = make_ccd()
    with pytest.raises(TypeError, match="ratio"):
        denoise_ccd(ccd, model=net)                              # ratio is required
    with pytest.raises(ValueError, match="> 1"):
        denoise_ccd(ccd, ratio=1, model=net, device="cpu")
    with pytest.raises(ValueError, match="> 1"):
        denoise_ccd(ccd, ratio=float("nan"), model=net, device="cpu")
    with pytest.raises(ValueError, match="2-D"):
        denoise_ccd(CCDData(np.ones((2, 8, 8)), unit="electron"), ratio=2, model=net)
    with pytest.raises(u.UnitsError, match="no unit"):
        denoise_ccd(NDData(np.ones((8, 8))), ratio=2, model=net)
    with pytest.raises(u.UnitsError, match="Cannot convert"):
        denoise_ccd(CCDData(np.ones((8, 8)), unit="Jy"), ratio=2, model=net, device="cpu")
    with pytest.raises(ValueError, match="exposure time"):
        denoise_ccd(CCDData(np.ones((8, 8)), unit="electron/s"), ratio=2, model=net,
                    device="cpu")
    with pytest.raises(ValueError, match="gain"):
        denoise_ccd(CCDData(np.ones((8, 8)), unit="adu"), ratio=2, model=net, device="cpu")
    with pytest.raises(TypeError, match="CCDData"):
        denoise_ccd(np.ones((8, 8)), ratio=2, model=net)
    with pytest.raises(ValueError, match="mode"):
        denoise_ccd(ccd, ratio=2, model=net, device="cpu", mode="mosaic")
    with pytest.raises(ValueError, match="tile_size"):
        denoise_ccd(ccd, ratio=2, model=net, device="cpu", tile_size=0)
    with pytest.raises(ValueError, match="overlap"):
        denoise_ccd(ccd, ratio=2, model=net, device="cpu", overlap=-3)
    with pytest.raises(ValueError, match="batch_size"):
        denoise_ccd(ccd, ratio=2, model=net, device="cpu", batch_size=1.5)
    with pytest.raises(ValueError, match="read_noise"):
        denoise_ccd(ccd, ratio=2, model=net, device="cpu", read_noise=-1)
    with pytest.raises(TypeError, match="model must be"):
        denoise_ccd(ccd, ratio=2, model=42, device="cpu")
    with pytest.raises(ValueError, match="device"):
        denoise_ccd(ccd, ratio=2, model=net, device="tpu")


@pytest.mark.parametrize("gain", [-2 * u.electron / u.adu, 0 * u.electron / u.adu, -2.0])
def test_gain_not_positive(gain):
    # issue 11: a negative Quantity gain ran and gave an uncertainty of 0; a zero
    # one ended in a bare ZeroDivisionError
    ccd = make_ccd("adu")
    with pytest.raises(ValueError, match="gain must be a finite positive number"):
        denoise_ccd(ccd, ratio=2, model=zero_head_net(), device="cpu", gain=gain)


@pytest.mark.parametrize("value, dtype", [(1e300, np.float64), (-1e100, np.float64),
                                          (3e38, np.float32)])
def test_values_beyond_float32_raise(value, dtype):
    # issue 11: a constant 1e300 image came back all NaN, nothing masked
    data = np.full((32, 32), value, dtype=dtype)
    ccd = CCDData(data, unit="electron")
    with pytest.raises(ValueError, match="beyond the float32 arithmetic of the network"):
        denoise_ccd(ccd, ratio=2, model=zero_head_net(), device="cpu")
    # huge values in masked pixels are filled before the network: fine
    data = np.full((32, 32), 50.0, dtype=dtype)
    data[3, 4] = value
    mask = np.zeros(data.shape, dtype=bool)
    mask[3, 4] = True
    out = denoise_ccd(CCDData(data, unit="electron", mask=mask), ratio=2,
                      model=zero_head_net(), device="cpu")
    assert np.isfinite(out.data).all() and out.mask[3, 4]


def test_large_but_representable_values_stay_finite():
    data = np.full((32, 32), 1e25)
    data[5, 5] *= 1.01
    out = denoise_ccd(CCDData(data, unit="electron"), ratio=2, model=random_net(),
                      device="cpu")
    assert np.isfinite(out.data).all() and np.isfinite(out.uncertainty.array).all()


def test_dict_meta_values_are_plain():
    # issue 11: with a dict meta, out.meta["EXPTIME"] was a (value, comment) tuple
    ccd = make_ccd(header=False)
    out = denoise_ccd(ccd, ratio=2, model=zero_head_net(), device="cpu", tile_size=32)
    assert float(out.meta["EXPTIME"]) == 2 * EXPTIME
    assert out.meta["DNRATIO"] == 2.0 and out.meta["DNMODE"] == "feather"
    assert not any(isinstance(value, tuple) for value in out.meta.values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_requested_but_absent():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        denoise_ccd(make_ccd(), ratio=2, model=zero_head_net(), device="cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        denoise_ccd(make_ccd(), ratio=2, model=zero_head_net(), device=torch.device("cuda:1"))
    # auto falls back to the CPU
    out = denoise_ccd(make_ccd(), ratio=2, model=zero_head_net(), device="auto")
    assert kw(out.meta, "DNDEVICE") == "cpu"


def test_model_file_roundtrip_and_cache(tmp_path):
    ccd = make_ccd()
    net = random_net()
    path = tmp_path / "tiny.pt"
    digest = save_model(net, path, normalization=dn.DEFAULT_NORMALIZATION,
                        metadata={"name": "tiny", "version": "1.2"}, half=False)
    from_file = denoise_ccd(ccd, ratio=2, model=str(path), device="cpu", tile_size=32)
    in_memory = denoise_ccd(ccd, ratio=2, model=net, device="cpu", tile_size=32)
    np.testing.assert_array_equal(from_file.data, in_memory.data)
    hdr = from_file.meta
    assert hdr["DNSHA256"] == digest and hdr["DNVER"] == "1.2" and hdr["DNSHAOF"] == "file"
    # the loaded model is cached per (name, file, device)...
    keys = [k for k in _inference.model_cache if k[1] == str(path)]
    assert len(keys) == 1
    again = denoise_ccd(ccd, ratio=2, model=path, device="cpu", tile_size=32)
    np.testing.assert_array_equal(again.data, from_file.data)
    # ...but a rewritten file is reloaded
    other = AstroUNet(base_channels=4, depth=3, residual=True)
    digest2 = save_model(other, path, normalization=dn.DEFAULT_NORMALIZATION, half=False)
    changed = denoise_ccd(ccd, ratio=2, model=path, device="cpu", tile_size=32)
    assert changed.meta["DNSHA256"] == digest2
    assert not np.array_equal(changed.data, from_file.data)
    assert len(_inference.model_cache) <= _inference.CACHE_SIZE


def test_long_model_name_gives_valid_fits_cards(tmp_path):
    net = random_net()
    info = {"name": "a-very-long-model-name-" * 5, "normalization": dn.DEFAULT_NORMALIZATION}
    out = denoise_ccd(make_ccd(), ratio=2, model=(net, info), device="cpu")
    assert out.meta["DNMODEL"].endswith("...") and len(out.meta["DNMODEL"]) == 68
    out.write(tmp_path / "long.fits")
    assert fits.getheader(tmp_path / "long.fits")["DNMODEL"] == out.meta["DNMODEL"]


def test_model_info_tuple_and_instance_sha():
    net = random_net()
    ccd = make_ccd()
    info = {"name": "mine", "sha256": "ab" * 32, "normalization": dn.DEFAULT_NORMALIZATION,
            "metadata": {"version": "7"}}
    out = denoise_ccd(ccd, ratio=2, model=(net, info), device="cpu")
    assert out.meta["DNMODEL"] == "mine" and out.meta["DNSHA256"] == "ab" * 32
    assert out.meta["DNVER"] == "7"
    out = denoise_ccd(ccd, ratio=2, model=net, device="cpu")
    h = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.float().numpy().tobytes())
    assert out.meta["DNSHA256"] == h.hexdigest()
    # the caller's network is not modified (device, memory format, grad flags)
    assert all(p.requires_grad and p.is_contiguous() for p in net.parameters())


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ModelFileError, match="bad.pt"):
        denoise_ccd(make_ccd(), ratio=2, model=str(bad), device="cpu")


def test_progress_output(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    denoise_ccd(make_ccd(), ratio=2, model=zero_head_net(), device="cpu", tile_size=32,
                progress=True)
    assert "tiles" in capsys.readouterr().err


def test_import_does_not_load_torch():
    code = "import sys, astro_unet; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("mode", ["feather", "paper"])
def test_device_resident_engine_matches_host_engine(monkeypatch, mode):
    """The engine used on CUDA (everything on the device) run here on the CPU."""
    ccd = make_ccd("electron", shape=(150, 170) if mode == "feather" else (280, 300))
    ccd.data[3, 4] = np.nan
    net = random_net(out_channels=2)
    kwargs = dict(ratio=RATIO, model=net, device="cpu", mode=mode)
    if mode == "feather":
        kwargs["tile_size"] = 64
    host = denoise_ccd(ccd, **kwargs)
    monkeypatch.setitem(dn.DEFAULT_ENGINE, "cpu", "torch")
    device = denoise_ccd(ccd, **kwargs)
    np.testing.assert_array_equal(device.mask, host.mask)
    np.testing.assert_allclose(device.data, host.data, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(device.uncertainty.array, host.uncertainty.array,
                               rtol=1e-5, atol=1e-5)
    identity = denoise_ccd(ccd, ratio=RATIO, model=zero_head_net(), device="cpu",
                           tile_size=32)
    good = np.isfinite(ccd.data)
    np.testing.assert_allclose(identity.data[good], RATIO * ccd.data[good], rtol=2e-6)


def test_float32_input_gives_float32_output():
    ccd = make_ccd("electron/s")
    ccd.data = ccd.data.astype(np.float32)
    out = denoise_ccd(ccd, ratio=RATIO, model=zero_head_net(), device="cpu")
    assert out.data.dtype == np.float32 and out.uncertainty.array.dtype == np.float32
    np.testing.assert_allclose(out.data, ccd.data, rtol=1e-5)


def test_out_of_memory_retries_with_smaller_batches(monkeypatch):
    calls = []
    real = dn.ENGINES["numpy"]

    def flaky(*args, batch_size, **kwargs):
        calls.append((batch_size, kwargs["tile_size"]))
        if len(calls) < 4:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(*args, batch_size=batch_size, **kwargs)

    monkeypatch.setitem(dn.ENGINES, "numpy", flaky)
    ccd = make_ccd("electron", shape=(200, 200))
    out = denoise_ccd(ccd, ratio=RATIO, model=zero_head_net(), device="cpu", batch_size=4,
                      tile_size=128, overlap=16)
    assert calls == [(4, 128), (2, 128), (1, 128), (1, 64)]
    assert out.meta["DNTILE"] == 64
    np.testing.assert_allclose(out.data, RATIO * ccd.data, rtol=2e-6)


def test_in_memory_model_copy_is_cached_until_weights_change():
    ccd = make_ccd()
    net = random_net()
    first = denoise_ccd(ccd, ratio=2, model=net, device="cpu")
    prepared = _inference.instance_cache[net]["cpu"][1]
    assert prepared is not net
    denoise_ccd(ccd, ratio=2, model=net, device="cpu")
    assert _inference.instance_cache[net]["cpu"][1] is prepared
    with torch.no_grad():
        net.head.bias += 1.0                      # an in-place update, like an optimiser step
    changed = denoise_ccd(ccd, ratio=2, model=net, device="cpu")
    assert _inference.instance_cache[net]["cpu"][1] is not prepared
    assert changed.meta["DNSHA256"] != first.meta["DNSHA256"]
    assert not np.allclose(changed.data, first.data)


def test_autocast_setting_is_validated():
    from astro_unet import conf

    assert _inference.autocast(torch.device("cpu")).__class__.__name__ == "nullcontext"
    with conf.set_temp("autocast", "int8"):
        with pytest.raises(ValueError, match="conf.autocast"):
            _inference.autocast(torch.device("cuda"))
    with conf.set_temp("autocast", "none"):
        assert _inference.autocast(torch.device("cuda")).__class__.__name__ == "nullcontext"


class TestNoiseScaledNormalization:
    """``scale="noise"`` and the ``log_noise`` condition, shared with training."""

    def _net(self):
        import torch

        from astro_unet.model import AstroUNet

        torch.manual_seed(3)
        net = AstroUNet(base_channels=4, depth=2, cond_names=("ratio", "log_noise"))
        net.normalization = {"unit": "electron", "transform": "asinh", "scale": "noise",
                             "noise_factor": 2.0}
        return net

    def test_background_noise_estimator(self):
        from astro_unet._normalization import background_noise

        rng = np.random.default_rng(1)
        img = rng.normal(100.0, 7.0, (200, 200))
        img[50:60, 50:60] += 1e5                       # a bright source barely matters
        assert background_noise(img) == pytest.approx(7.0, rel=0.05)
        bad = np.zeros(img.shape, bool)
        bad[:, :100] = True
        img[:, :100] = 1e9
        assert background_noise(img, bad) == pytest.approx(7.0, rel=0.07)

    def test_network_input_matches_denoise_ccd(self):
        import torch

        from astro_unet._normalization import inverse_transform, network_input, network_target

        net = self._net()
        rng = np.random.default_rng(2)
        electrons = rng.poisson(30.0, (64, 64)).astype(float)
        ccd = CCDData(electrons.copy(), unit="electron", meta={"EXPTIME": 10.0})
        out = denoise_ccd(ccd, ratio=3, model=net, device="cpu", tile_size=64, estimate="mean")
        x, cond, ctx = network_input(electrons, norm=net.normalization, ratio=3,
                                     exptime=10.0, read_noise=0.0,
                                     cond_names=net.config.cond_names)
        assert cond[0] == 3 and cond[1] == pytest.approx(np.log10(ctx["noise"]))
        assert ctx["norm"]["scale"] == pytest.approx(2.0 * ctx["noise"])
        assert out.meta["DNNOISE"] == pytest.approx(ctx["noise"], rel=1e-5)
        with torch.inference_mode():
            y = net(torch.from_numpy(x)[None, None], torch.from_numpy(cond)[None])[0, 0]
        direct, _ = inverse_transform(y.double().numpy(), ctx["norm"], 0.0)
        # counts: the output is the long exposure, r times the short-exposure estimate
        np.testing.assert_allclose(out.data, 3 * direct, rtol=1e-4, atol=1e-4)
        # a target transformed with the same context round-trips
        t = network_target(electrons, norm=net.normalization, ctx=ctx)
        back, _ = inverse_transform(t.astype(float), ctx["norm"], 0.0)
        np.testing.assert_allclose(back, electrons, rtol=1e-5, atol=1e-4)

    def test_bad_noise_factor(self):
        net = self._net()
        net.normalization = dict(net.normalization, noise_factor=-1)
        ccd = CCDData(np.ones((16, 16)), unit="electron")
        with pytest.raises(ValueError, match="noise_factor"):
            denoise_ccd(ccd, ratio=2, model=net, device="cpu")


def test_median_offset_keeps_sky_noise_visible():
    """``offset="median"``: a sky pedestal does not squash the background noise."""
    from astro_unet._normalization import inverse_transform, network_input

    rng = np.random.default_rng(5)
    sky = rng.poisson(5000.0, (64, 64)).astype(float)
    norm = {"unit": "electron", "transform": "asinh", "scale": "noise", "noise_factor": 3.0}
    spread = {}
    for offset in (0.0, "median"):
        x, _, ctx = network_input(sky, norm=dict(norm, offset=offset), ratio=2, exptime=1.0,
                                  read_noise=0.0, cond_names=("ratio",))
        spread[offset] = x.std()
        back, _ = inverse_transform(x.astype(float), ctx["norm"], 0.0)
        np.testing.assert_allclose(back, sky, rtol=1e-5)
    assert ctx["norm"]["offset"] == pytest.approx(5000.0, abs=10)
    assert spread["median"] > 0.25
    assert spread["median"] > 10 * spread[0.0]


# ---------------------------------------------------------------------------
# estimate="long" / "mean", the ratio guard, saturation


def test_long_estimate_adds_the_input_noise_scaled_to_the_long_exposure():
    net = random_net()
    ccd = make_ccd("electron")
    snap = snapshot(ccd)
    mean = denoise_ccd(ccd, ratio=4, model=net, device="cpu", estimate="mean")
    long = denoise_ccd(ccd, ratio=4, model=net, device="cpu", estimate="long")
    assert_unchanged(ccd, snap)
    assert kw(long.meta, "DNESTIM") == "long" and kw(mean.meta, "DNESTIM") == "mean"
    # counts: the output is the long exposure, x r; d + (x r - d) / sqrt(r)
    x_long = 4 * ccd.data
    np.testing.assert_allclose(long.data, mean.data + (x_long - mean.data) / 2.0, rtol=1e-6)
    # the added noise: the input's, at the level of the long exposure (rms / sqrt(r) in rate)
    np.testing.assert_allclose(np.std(long.data - mean.data),
                               np.std(x_long - mean.data) / 2.0, rtol=1e-6)
    # the long estimate carries the noise it added (no read noise: sqrt(var_in) / 2)
    assert np.median(long.uncertainty.array) == pytest.approx(
        2 * background_noise(ccd.data), rel=0.3)
    with pytest.raises(ValueError, match="estimate must be one of"):
        denoise_ccd(ccd, ratio=4, model=net, device="cpu", estimate="median")


def test_long_estimate_in_rate_units_and_bad_pixels_keep_the_mean():
    net = random_net()
    ccd = make_ccd("electron/s")
    ccd.mask = np.zeros(ccd.shape, bool)
    ccd.mask[5, 7] = True
    mean = denoise_ccd(ccd, ratio=2, model=net, device="cpu", estimate="mean")
    long = denoise_ccd(ccd, ratio=2, model=net, device="cpu", estimate="long")
    good = ~ccd.mask
    np.testing.assert_allclose(long.data[good], (mean.data + (ccd.data - mean.data)
                                                 / np.sqrt(2))[good], rtol=1e-6)
    assert long.data[5, 7] == mean.data[5, 7] and long.mask[5, 7]


def test_extended_estimate_is_the_expected_exposure_that_begins_with_the_input():
    net = random_net()
    ccd = make_ccd("electron")
    ccd.mask = np.zeros(ccd.shape, bool)
    ccd.mask[5, 7] = True
    snap = snapshot(ccd)
    mean = denoise_ccd(ccd, ratio=4, model=net, device="cpu", estimate="mean")
    ext = denoise_ccd(ccd, ratio=4, model=net, device="cpu")      # the default
    assert_unchanged(ccd, snap)
    assert kw(ext.meta, "DNESTIM") == "extended"
    # counts of the exposure 4 times longer: the input's own electrons (x) plus the
    # network's expectation for the other three quarters of the time, (x r + (r - 1) d) / r
    # in long-exposure counts (d = mean.data) = d + (x r - d) / r
    good = ~ccd.mask
    x_long = 4 * ccd.data
    np.testing.assert_allclose(ext.data[good], (ccd.data + 3 * mean.data / 4)[good],
                               rtol=1e-6)
    np.testing.assert_allclose(ext.data[good], (mean.data + (x_long - mean.data) / 4)[good],
                               rtol=1e-6)
    # the input's noise stays, divided by r (its rms in long-exposure counts: that of x)
    np.testing.assert_allclose(np.std((ext.data - mean.data)[good]),
                               np.std((x_long - mean.data)[good]) / 4, rtol=1e-6)
    # flux: the total of the extended image is a weighted mean of the input's and d's
    total = (np.sum(x_long[good]) + 3 * np.sum(mean.data[good])) / 4
    assert np.sum(ext.data[good]) == pytest.approx(total, rel=1e-9)
    # bad pixels keep the mean estimate and stay masked
    assert ext.data[5, 7] == mean.data[5, 7] and ext.mask[5, 7]


def _with_ratios(net, ratios):
    info = {"name": "trained", "normalization": dn.DEFAULT_NORMALIZATION,
            "metadata": {"version": "1", "ratios": ratios}}
    return (net, info)


@pytest.mark.parametrize("ratios", [{"schedule": "mixed", "values": [2.0, 5.0],
                                     "range": [1.5, 10.0]}, [1.5, 10.0]])
def test_ratio_outside_training_warns_and_far_outside_raises(ratios):
    from astropy.utils.exceptions import AstropyUserWarning

    model = _with_ratios(random_net(), ratios)
    ccd = make_ccd("electron")
    denoise_ccd(ccd, ratio=10, model=model, device="cpu")          # inside: silent
    with pytest.warns(AstropyUserWarning, match=r"outside the ratios .* \(1.5 to 10\)"):
        denoise_ccd(ccd, ratio=1.2, model=model, device="cpu")
    with pytest.warns(AstropyUserWarning, match="outside the ratios"):
        denoise_ccd(ccd, ratio=15, model=model, device="cpu")
    for ratio in (30, 1e5):
        with pytest.raises(ValueError, match="extrapolate=True"):
            denoise_ccd(ccd, ratio=ratio, model=model, device="cpu")
    with pytest.warns(AstropyUserWarning):
        out = denoise_ccd(ccd, ratio=30, model=model, device="cpu", extrapolate=True)
    assert np.isfinite(out.data).all()
    with pytest.raises(TypeError, match="extrapolate"):
        denoise_ccd(ccd, ratio=2, model=model, device="cpu", extrapolate="yes")


def test_saturated_pixels_are_masked_not_brightened():
    net = random_net()
    ccd = make_ccd("adu", SATURATE=1000.0)
    sat = ccd.data >= 1000.0
    assert 0 < sat.sum() < 100
    out = denoise_ccd(ccd, ratio=2, model=net, device="cpu")
    assert out.mask[sat].all() and not out.mask[~sat].any()
    assert kw(out.meta, "DNNSAT") == sat.sum()
    # the input's value, in the output unit (counts of the long exposure): a lower limit
    np.testing.assert_allclose(out.data[sat], 2 * ccd.data[sat])
    # an argument replaces the keyword; False switches it off; a Quantity is converted
    out = denoise_ccd(ccd, ratio=2, model=net, device="cpu", saturation=False)
    assert out.mask is None or not out.mask.any()
    assert "DNNSAT" not in out.meta
    out = denoise_ccd(ccd, ratio=2, model=net, device="cpu", saturation=0.5 * u.kadu)
    np.testing.assert_array_equal(out.mask, ccd.data >= 500.0)
    with pytest.raises(u.UnitsError, match="saturation"):
        denoise_ccd(ccd, ratio=2, model=net, device="cpu", saturation=5 * u.s)
    with pytest.raises(ValueError, match="saturation"):
        denoise_ccd(ccd, ratio=2, model=net, device="cpu", saturation=-1.0)
    # a rate image ignores SATURATE (its scale rarely matches)
    rate = make_ccd("adu/s", SATURATE=1.0)
    out = denoise_ccd(rate, ratio=2, model=net, device="cpu")
    assert "DNNSAT" not in out.meta


def test_default_tile_grows_with_the_overlap():
    net = random_net()
    info = {"name": "wide", "normalization": dict(dn.DEFAULT_NORMALIZATION, overlap=200)}
    rng = np.random.default_rng(4)
    ccd = CCDData(rng.poisson(40.0, (48, 1400)).astype(float), unit="electron")
    out = denoise_ccd(ccd, ratio=2, model=(net, info), device="cpu", estimate="mean")
    # 6 x 200 px instead of 512, so the overlap stays a small part of the work
    assert kw(out.meta, "DNTILE") == dn.TILE_PER_OVERLAP * 200
    assert kw(out.meta, "DNOVERLP") == 200
    # an explicit tile size or overlap is respected
    out = denoise_ccd(ccd, ratio=2, model=(net, info), device="cpu", overlap=40)
    assert kw(out.meta, "DNTILE") == 512 and kw(out.meta, "DNOVERLP") == 40
    with pytest.raises(ValueError, match="overlap must be a non-negative integer"):
        denoise_ccd(ccd, ratio=2, model=(net, info), device="cpu", overlap=-1)


class _RunawayNet(IdentityNet):
    """Returns a constant far above its input: what a ratio far outside training did."""

    def forward(self, x, cond=None):
        return super().forward(x, cond) + 30.0


def test_runaway_network_output_raises_instead_of_returning_garbage():
    # issue 11: ratio=1e5 returned a mean of 1.9e7 against 5e6 and pixels down to -3.2e7
    ccd = make_ccd("electron")
    snap = snapshot(ccd)
    with pytest.raises(RuntimeError, match="far outside what the model was trained on"):
        denoise_ccd(ccd, ratio=2, model=_RunawayNet(base_channels=4, depth=2), device="cpu")
    assert_unchanged(ccd, snap)
