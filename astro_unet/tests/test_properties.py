# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Property-based tests of the public functions (hypothesis), issue 11.

Random images -- shapes (thin ones too), dtypes, byte orders, units, gains,
exposure times, masks, uncertainties, metadata types -- go through
`simulate_short_exposure`, `clean_cosmic_rays`, `denoise_ccd` (a tiny
network) and `photometric_comparison`.  Each call must either

* return an object of the input's class and shape whose data (and
  uncertainty) are finite wherever the input was finite, or
* raise one of the documented exceptions (`ValueError`, `TypeError`,
  `astropy.units.UnitsError`),

and must never modify its input.  Examples are derandomized (the same ones
on every run) and the whole module runs in well under a minute.
"""

import warnings
from copy import deepcopy

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.utils.exceptions import AstropyUserWarning

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

torch = pytest.importorskip("torch")

from astro_unet import (clean_cosmic_rays, denoise_ccd, photometric_comparison,  # noqa: E402
                        simulate_short_exposure)
from astro_unet.model import AstroUNet  # noqa: E402

#: The exceptions the functions document for bad input.
DOCUMENTED = (ValueError, TypeError, u.UnitsError)

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def pick(rng, choices, weights=None):
    """One of ``choices`` (by ``weights``): numpy picks, so that invalid values stay rare."""
    p = None if weights is None else np.asarray(weights, float) / np.sum(weights)
    return choices[rng.choice(len(choices), p=p)]


# mostly valid values, some invalid ones
UNITS = (["electron", "electron/s", "adu", "adu/s", "count", "Jy", None],
         [6, 4, 3, 2, 1, 1, 1])
DTYPES = ["f4", "f8", "i2", "u2", "i4"]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return AstroUNet(base_channels=4, depth=2, residual=True)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test of this module on one torch thread (see conftest.py)."""


@st.composite
def images(draw, *, min_side=1, max_side=40):
    """A CCDData or NDData with random pixels, unit, metadata, mask and uncertainty."""
    ny = draw(st.integers(min_side, max_side))
    nx = draw(st.integers(min_side, max_side))
    dtype = np.dtype(draw(st.sampled_from("<>")) + draw(st.sampled_from(DTYPES)))
    cls = draw(st.sampled_from([CCDData, NDData]))
    header = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))

    level = pick(rng, [0.0, 1.0, 50.0, 1e3, 3e4, -20.0, 1e35], [3, 3, 3, 3, 3, 2, 1])
    values = rng.normal(level, max(1.0, abs(level)) ** 0.5, (ny, nx))
    values[rng.random((ny, nx)) < 0.02] += 2000.0          # hot pixels / cosmic rays
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.round(values), info.min, info.max)
    data = values.astype(dtype)
    if dtype.kind == "f" and rng.random() < 0.3:
        data[rng.random((ny, nx)) < 0.05] = pick(rng, [np.nan, np.inf, -np.inf])

    unit = pick(rng, *UNITS)
    meta = fits.Header() if header else {}
    if rng.random() < 0.8:
        meta["EXPTIME"] = pick(rng, [100.0, 1.0, 0.0, -5.0, "long"], [12, 2, 1, 1, 1])
    if rng.random() < 0.8:
        meta["GAIN"] = pick(rng, [1.5, 2.0, 0.0, -1.0], [8, 4, 1, 1])
    if rng.random() < 0.5:
        meta["OBJECT"] = "field"
        meta["RDNOISE"] = 3.0

    mask_kind = pick(rng, ["none", "random", "all", "wrong-shape"], [8, 8, 1, 1])
    mask = None
    if mask_kind == "random":
        mask = rng.random((ny, nx)) < 0.1
    elif mask_kind == "all":
        mask = np.ones((ny, nx), dtype=bool)
    if cls is CCDData and unit is None:
        cls = NDData  # CCDData refuses no unit: that is NDData's case
    uncertainty = None
    if rng.random() < 0.5:
        uncertainty = StdDevUncertainty(np.abs(rng.normal(1.0, 0.1, (ny, nx))))
    ccd = cls(data, unit=unit, meta=meta, mask=mask, uncertainty=uncertainty)
    if mask_kind == "wrong-shape" and cls is NDData:
        ccd.mask = np.zeros((ny + 1, nx), dtype=bool)  # NDData does not check
    return ccd


@st.composite
def options(draw, **choices):
    """Keyword arguments: for each name, ``(values, weights)`` picked with numpy."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    return {name: pick(rng, *spec) for name, spec in choices.items()}


def snapshot(ccd):
    return (np.array(ccd.data, copy=True), ccd.data.dtype,
            None if ccd.mask is None else np.array(ccd.mask, copy=True),
            deepcopy(ccd.meta), repr(ccd.meta),
            None if ccd.uncertainty is None else np.array(ccd.uncertainty.array, copy=True))


def assert_unchanged(ccd, snap):
    data, dtype, mask, meta, meta_repr, unc = snap
    assert ccd.data.dtype == dtype
    np.testing.assert_array_equal(ccd.data, data)
    if mask is None:
        assert ccd.mask is None
    else:
        np.testing.assert_array_equal(ccd.mask, mask)
    assert repr(ccd.meta) == meta_repr and type(ccd.meta) is type(meta)
    if unc is not None:
        np.testing.assert_array_equal(ccd.uncertainty.array, unc)


def check_call(ccd, call):
    """Run ``call(ccd)``: a documented exception, or a sound result; input untouched."""
    snap = snapshot(ccd)
    with warnings.catch_warnings():
        # documented warnings (sky-subtracted data for L.A.Cosmic, FITS card fixes)
        warnings.simplefilter("ignore", AstropyUserWarning)
        try:
            out = call(ccd)
        except DOCUMENTED as err:
            assert str(err), type(err)  # a message, not a bare exception
            out = None
    assert_unchanged(ccd, snap)
    if out is None:
        return None
    result = out[0] if isinstance(out, tuple) else out
    assert type(result) is type(ccd)
    assert np.shape(result.data) == np.shape(ccd.data)
    finite = np.isfinite(np.asarray(ccd.data, dtype=float))
    assert np.isfinite(result.data[finite]).all(), "NaN/inf where the input was finite"
    if result.uncertainty is not None:
        assert np.isfinite(result.uncertainty.array[finite]).all()
    assert not any(isinstance(v, tuple) for v in dict(result.meta).values()) \
        or isinstance(result.meta, fits.Header)
    return out


@SETTINGS
@given(ccd=images(), kw=options(
    ratio=([2, 3.5, 5, 1.0, float("nan")], [4, 2, 2, 1, 1]),
    read_noise=([3.1, 3.1 * u.electron, None, -1.0], [4, 2, 1, 1]),
    gain=([None, 2.0, 2 * u.electron / u.adu, -2 * u.electron / u.adu], [4, 2, 2, 1]),
    seed=([0, 12345, -1, "abc"], [4, 4, 1, 1])))
def test_simulate_short_exposure(ccd, kw):
    ratio = kw.pop("ratio")
    check_call(ccd, lambda c: simulate_short_exposure(c, ratio, dark_current=0.0, **kw))


@SETTINGS
@given(ccd=images(), kw=options(
    gain=([None, 1.5, 0 * u.electron / u.adu], [4, 2, 1]),
    sepmed=([True, False], None),
    cleantype=(["meanmask", "median", "idw"], None)))
def test_clean_cosmic_rays(ccd, kw):
    out = check_call(ccd, lambda c: clean_cosmic_rays(
        c, read_noise=3.0, exposure_time=100.0, return_mask=True, **kw))
    if out is not None:
        # pixels that were not flagged keep their exact input values
        result, crmask = out
        data = np.asarray(ccd.data, dtype=float)
        np.testing.assert_array_equal(result.data[~crmask], data[~crmask])


@SETTINGS
@given(ccd=images(), kw=options(
    ratio=([2, 4.0, 3, 1.0, -3], [4, 2, 2, 1, 1]),
    gain=([None, 2.0, -2 * u.electron / u.adu], [4, 2, 1]),
    exposure_time=([None, 50.0, 0.0], [4, 2, 1])))
def test_denoise_ccd(net, ccd, kw):
    check_call(ccd, lambda c: denoise_ccd(c, model=net, device="cpu", tile_size=32, **kw))


@settings(SETTINGS, max_examples=12)
@given(ccd=images(min_side=8, max_side=48), scale=st.sampled_from([1.0, 0.5, 2.0]))
def test_photometric_comparison(ccd, scale):
    snap = snapshot(ccd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        try:
            other = type(ccd)(np.asarray(ccd.data, dtype=float) * scale, unit=ccd.unit,
                              meta=deepcopy(ccd.meta))
            table, summary = photometric_comparison(ccd, other)
        except DOCUMENTED as err:
            assert str(err)
        else:
            assert 0 <= summary["n_matched"] <= summary["n_reference"]
            assert len(table) >= summary["n_reference"]
    assert_unchanged(ccd, snap)
