# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Bit-exact regression pins of the inference code (CPU, fixed seeds).

The expected digests were computed with the code as it was before
`astro_unet.denoise` was split by concern (issue 12): `denoise_ccd` (both
estimates, masked and NaN pixels, saturation, one- and two-channel models,
several blended tiles, the paper mosaic and the device-resident engine run
on the CPU), `denoise_large`, `denoise_files` and `simulate_short_exposure`.
A refactoring must leave them unchanged; a deliberate change of behaviour
updates them in the same commit and says why.  Changes so far: the
``estimate="long"`` digests, when the long estimate's noise scale became the
per-pixel ``alpha`` of `astro_unet._plan.long_exposure_factor` and its
uncertainty its own (the mean-estimate digests did not change).  Everything is tiny and made
in the test.
"""


import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from astro_unet import denoise_ccd, simulate_short_exposure
from astro_unet.tests.helpers import digest as _digest

torch = pytest.importorskip("torch")

from astro_unet import denoise as dn  # noqa: E402
from astro_unet.model import AstroUNet  # noqa: E402

SHAPE = (96, 80)
EXPTIME = 50.0
NOISE_NORM = {"unit": "electron", "transform": "asinh", "scale": "noise", "noise_factor": 2.0,
              "offset": "median"}
ANSCOMBE = {"unit": "electron/s", "transform": "anscombe", "read_noise": 3.0}
CARDS = ("EXPTIME", "DNMODEL", "DNSHA256", "DNSHAOF", "DNRATIO", "DNESTIM", "DNTILE",
         "DNOVERLP", "DNMODE", "DNDEVICE", "DNUNCERT", "DNNSAT", "DNNOISE")


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test of this module on one torch thread (see conftest.py)."""


def _net(seed, **kw):
    torch.manual_seed(seed)
    return AstroUNet(base_channels=4, depth=3, residual=True, **kw)


def _model(kind):
    if kind == "one":
        return (_net(3, cond_names=("ratio", "log_noise")), {"normalization": NOISE_NORM})
    return (_net(4, cond_names=("ratio", "log_exptime", "read_noise"), out_channels=2),
            {"normalization": ANSCOMBE})


def _pixels(seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    expected = np.full(shape, 30.0)
    for _ in range(8):
        y, x = rng.uniform(3, shape[0] - 3), rng.uniform(3, shape[1] - 3)
        expected += rng.uniform(300, 8000) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 5.0)
    return rng.poisson(expected).astype(np.float64) + rng.normal(0.0, 3.0, shape)


def _ccd(unit="electron", dtype=np.float64):
    data = _pixels()
    if unit == "electron/s":
        data = data / EXPTIME
    data = data.astype(dtype)
    data[10, 11] = np.nan
    mask = np.zeros(SHAPE, dtype=bool)
    mask[40:42, 30:33] = True
    meta = {"EXPTIME": EXPTIME}
    if unit == "electron":
        meta["SATURATE"] = 6000.0
    return CCDData(data, unit=unit, mask=mask, meta=fits.Header(meta))


def _result_values(out):
    cards = tuple((k, out.meta[k]) for k in CARDS if k in out.meta)
    return _digest(out.data, out.uncertainty.array, out.mask), cards


CCD_CASES = {
    "long": dict(model="one", unit="electron", estimate="long"),
    "mean": dict(model="one", unit="electron", estimate="mean"),
    "two_channel": dict(model="two", unit="electron/s", estimate="long", dtype=np.float32),
    "two_channel_mean": dict(model="two", unit="electron/s", estimate="mean"),
    "paper": dict(model="one", unit="electron", estimate="long", mode="paper", overlap=24),
}


def _ccd_pins():
    out = {}
    for name, case in CCD_CASES.items():
        case = dict(case)
        ccd = _ccd(case.pop("unit"), case.pop("dtype", np.float64))
        result = denoise_ccd(ccd, ratio=3, model=_model(case.pop("model")), device="cpu",
                             tile_size=32, overlap=case.pop("overlap", 8), batch_size=2,
                             **case)
        out[name] = _result_values(result)
    return out


EXPECTED_CCD = (
    {'long': ('0202b49849a6bb2868b3a07cddb6e70a3416e7e5d1b7316474a0d74a4365fa83',
              (('EXPTIME', 150.0),
               ('DNMODEL', 'in-memory'),
               ('DNSHA256', '02a171d932be332dde449eb8d8de466e3a75606e3144943c71b52fd05044c01a'),
               ('DNSHAOF', 'weights'),
               ('DNRATIO', 3.0),
               ('DNESTIM', 'long'),
               ('DNTILE', 32),
               ('DNOVERLP', 8),
               ('DNMODE', 'feather'),
               ('DNDEVICE', 'cpu'),
               ('DNUNCERT', 'poisson-estimate'),
               ('DNNSAT', 4),
               ('DNNOISE', 7.0587))),
     'mean': ('41e493a151c6eff57a1b8c9ceb67a8fe6242f2120e71f042a5ed79aea568d2d8',
              (('EXPTIME', 150.0),
               ('DNMODEL', 'in-memory'),
               ('DNSHA256', '02a171d932be332dde449eb8d8de466e3a75606e3144943c71b52fd05044c01a'),
               ('DNSHAOF', 'weights'),
               ('DNRATIO', 3.0),
               ('DNESTIM', 'mean'),
               ('DNTILE', 32),
               ('DNOVERLP', 8),
               ('DNMODE', 'feather'),
               ('DNDEVICE', 'cpu'),
               ('DNUNCERT', 'poisson-estimate'),
               ('DNNSAT', 4),
               ('DNNOISE', 7.0587))),
     'paper': ('437e9e43d0abddba1eb1b0d2fda00b60355ed78aa18f07cecfbd0f84dc7571b0',
               (('EXPTIME', 150.0),
                ('DNMODEL', 'in-memory'),
                ('DNSHA256', '02a171d932be332dde449eb8d8de466e3a75606e3144943c71b52fd05044c01a'),
                ('DNSHAOF', 'weights'),
                ('DNRATIO', 3.0),
                ('DNESTIM', 'long'),
                ('DNTILE', 32),
                ('DNOVERLP', 24),
                ('DNMODE', 'paper'),
                ('DNDEVICE', 'cpu'),
                ('DNUNCERT', 'poisson-estimate'),
                ('DNNSAT', 4),
                ('DNNOISE', 7.0587))),
     'two_channel': ('eb56169929d448b0e5de0bed47f9a00708e4898d4b1e14214cf68ad9c29ac91c',
                     (('EXPTIME', 150.0),
                      ('DNMODEL', 'in-memory'),
                      ('DNSHA256',
                       '6b83f2fadd748800fa55916aadb6e8e38fb2b4d9d48e4b5eae3b52dcfcc43616'),
                      ('DNSHAOF', 'weights'),
                      ('DNRATIO', 3.0),
                      ('DNESTIM', 'long'),
                      ('DNTILE', 32),
                      ('DNOVERLP', 8),
                      ('DNMODE', 'feather'),
                      ('DNDEVICE', 'cpu'),
                      ('DNUNCERT', 'model'))),
     'two_channel_mean': ('eb9104396e7aa05a661ca45596ea1628f5ad3b562cd2611f05c950e71032770f',
                          (('EXPTIME', 150.0),
                           ('DNMODEL', 'in-memory'),
                           ('DNSHA256',
                            '6b83f2fadd748800fa55916aadb6e8e38fb2b4d9d48e4b5eae3b52dcfcc43616'),
                           ('DNSHAOF', 'weights'),
                           ('DNRATIO', 3.0),
                           ('DNESTIM', 'mean'),
                           ('DNTILE', 32),
                           ('DNOVERLP', 8),
                           ('DNMODE', 'feather'),
                           ('DNDEVICE', 'cpu'),
                           ('DNUNCERT', 'model')))}
)


def test_denoise_ccd_pins():
    assert _ccd_pins() == EXPECTED_CCD


EXPECTED_TORCH_ENGINE = (
    {'one': ('ab642d63153723b1eeb53a4de0ef3bce4e2a48573e17ef876f1cb82373127bd2',
             (('EXPTIME', 150.0),
              ('DNMODEL', 'in-memory'),
              ('DNSHA256', '02a171d932be332dde449eb8d8de466e3a75606e3144943c71b52fd05044c01a'),
              ('DNSHAOF', 'weights'),
              ('DNRATIO', 3.0),
              ('DNESTIM', 'long'),
              ('DNTILE', 32),
              ('DNOVERLP', 8),
              ('DNMODE', 'feather'),
              ('DNDEVICE', 'cpu'),
              ('DNUNCERT', 'poisson-estimate'),
              ('DNNSAT', 4),
              ('DNNOISE', 7.0587))),
     'two': ('335a7f6819b5190fc09059ad4e2647f254f5a0a9c7bb69faf4ea43705e4de242',
             (('EXPTIME', 150.0),
              ('DNMODEL', 'in-memory'),
              ('DNSHA256', '6b83f2fadd748800fa55916aadb6e8e38fb2b4d9d48e4b5eae3b52dcfcc43616'),
              ('DNSHAOF', 'weights'),
              ('DNRATIO', 3.0),
              ('DNESTIM', 'long'),
              ('DNTILE', 32),
              ('DNOVERLP', 8),
              ('DNMODE', 'feather'),
              ('DNDEVICE', 'cpu'),
              ('DNUNCERT', 'model')))}
)


def test_denoise_ccd_torch_engine_on_cpu(monkeypatch):
    """The device-resident engine (the CUDA default), run on the CPU."""
    monkeypatch.setitem(dn.DEFAULT_ENGINE, "cpu", "torch")
    out = {}
    for kind, unit in (("one", "electron"), ("two", "electron/s")):
        result = denoise_ccd(_ccd(unit), ratio=3, model=_model(kind), device="cpu",
                             tile_size=32, overlap=8, batch_size=3)
        out[kind] = _result_values(result)
    assert out == EXPECTED_TORCH_ENGINE


EXPECTED_LARGE = (
    {'one': (['PRIMARY', 'UNCERT', 'MASK'],
             '3e39c9891112cf701efa0f8397191a4c88709352bfa039ff867a66e6def3be36',
             (('EXPTIME', 150.0),
              ('DNMODEL', 'in-memory'),
              ('DNSHA256', '02a171d932be332dde449eb8d8de466e3a75606e3144943c71b52fd05044c01a'),
              ('DNSHAOF', 'weights'),
              ('DNRATIO', 3.0),
              ('DNESTIM', 'long'),
              ('DNTILE', 32),
              ('DNOVERLP', 8),
              ('DNMODE', 'feather'),
              ('DNDEVICE', 'cpu'),
              ('DNUNCERT', 'poisson-estimate'),
              ('DNNOISE', 7.02358))),
     'two': (['PRIMARY', 'UNCERT', 'MASK'],
             '74844ae3e277a7d5b2c0446538c380b0259081c6f5e188d455174394edbeff19',
             (('EXPTIME', 150.0),
              ('DNMODEL', 'in-memory'),
              ('DNSHA256', '6b83f2fadd748800fa55916aadb6e8e38fb2b4d9d48e4b5eae3b52dcfcc43616'),
              ('DNSHAOF', 'weights'),
              ('DNRATIO', 3.0),
              ('DNESTIM', 'long'),
              ('DNTILE', 32),
              ('DNOVERLP', 8),
              ('DNMODE', 'feather'),
              ('DNDEVICE', 'cpu'),
              ('DNUNCERT', 'model')))}
)


def test_denoise_large_pins(tmp_path):
    pytest.importorskip("dask")
    from astro_unet import denoise_large

    out = {}
    for kind, unit in (("one", "electron"), ("two", "electron/s")):
        data = _pixels(1)
        if unit == "electron/s":
            data = data / EXPTIME
        data = data.astype(np.float32)
        data[50, 7] = np.nan
        header = fits.Header({"BUNIT": unit, "EXPTIME": EXPTIME})
        path = tmp_path / f"{kind}.fits"
        fits.writeto(path, data, header)
        # workers=3: a dask thread pool of its own, whose threads start under this
        # module's one torch thread (a pool made earlier, under another number of
        # torch threads, keeps it, and the network's sums change in the last bits)
        written = denoise_large(path, tmp_path / f"{kind}_out.fits", ratio=3,
                                model=_model(kind), chunk_size=40, tile_size=32, overlap=8,
                                batch_size=2, device="cpu", workers=3)
        with fits.open(written) as hdul:
            names = [h.name for h in hdul]
            arrays = [h.data for h in hdul]
            cards = tuple((k, hdul[0].header[k]) for k in CARDS if k in hdul[0].header)
        out[kind] = (names, _digest(*arrays), cards)
    assert out == EXPECTED_LARGE


EXPECTED_FILES = '6dd256b5202732adaa5b7feb8f7bebc5280011a3630e3f00eba7384bd7448d0f'


def test_denoise_files_pins(tmp_path):
    pytest.importorskip("distributed")
    from distributed import Client

    from astro_unet import denoise_files
    from astro_unet.model import save_model

    net, info = _model("one")
    model_file = tmp_path / "one.pt"
    save_model(net, model_file, normalization=info["normalization"])
    data = _pixels(2).astype(np.float32)
    fits.writeto(tmp_path / "a.fits", data, fits.Header({"BUNIT": "electron",
                                                        "EXPTIME": EXPTIME}))
    with Client(processes=False, n_workers=1, threads_per_worker=1, protocol="tcp",
                host="127.0.0.1", dashboard_address="127.0.0.1:0") as client:
        table = denoise_files([str(tmp_path / "a.fits")], tmp_path / "out", ratio=3,
                              model=str(model_file), client=client, device="cpu",
                              tile_size=32, overlap=8)
    assert list(table["status"]) == ["ok"]
    with fits.open(tmp_path / "out" / "a_denoised.fits") as hdul:
        assert _digest(*[h.data for h in hdul if h.data is not None]) == EXPECTED_FILES


EXPECTED_SIMULATE = (
    {'counts': ('47849e5a601d0404457ecdca4fc214929403c6aa6cdcee47b61771f5de0a45ca', 12.5),
     'rate': ('994da3bb4bc82d617eaa4655f2ad83c41a013e1ced7fbb555754152af8808c56', 12.5),
     'wfc3': ('e2df5142dd549d78be6c5ac2a3ee3ff9dc024cdc86b3f1192fbf458f0069d3af', 12.5)}
)


def test_simulate_short_exposure_pins():
    long_rate = CCDData(_pixels(3) / EXPTIME, unit="electron/s",
                        meta={"EXPTIME": EXPTIME, "MDRIZSKY": 0.2})
    long_counts = CCDData(_pixels(4) / 2.0, unit="adu", meta={"EXPTIME": EXPTIME, "GAIN": 2.0})
    out = {}
    for name, ccd, kw in (("rate", long_rate, dict(read_noise=3.0, sky="header")),
                          ("wfc3", long_rate, dict(detector="wfc3_uvis")),
                          ("counts", long_counts, dict(read_noise=4.0, dark_current=0.05))):
        short = simulate_short_exposure(ccd, 4, seed=7, **kw)
        arrays = [short.data]
        if short.uncertainty is not None:
            arrays.append(short.uncertainty.array)
        out[name] = (_digest(*arrays), short.meta["EXPTIME"])
    assert out == EXPECTED_SIMULATE
