# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of the shared input checks and unit conversion."""

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.wcs import WCS

from astro_unet import _validation as v
from astro_unet._logging import log_step, set_keyword
from astro_unet import load_sample_image, sample_image_path


def make_ccd(unit="electron", meta=None, shape=(8, 9)):
    return CCDData(np.arange(np.prod(shape), dtype=float).reshape(shape), unit=unit,
                   meta=meta or {})


class TestValidateCCD:
    def test_returns_float_copy(self):
        ccd = make_ccd()
        data = v.validate_ccd(ccd)
        assert data.dtype == np.float64
        data[0, 0] = 99
        assert ccd.data[0, 0] == 0

    def test_not_nddata(self):
        with pytest.raises(TypeError, match="CCDData or NDData"):
            v.validate_ccd(np.zeros((3, 3)))

    @pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
    def test_wrong_dimensions(self, shape):
        with pytest.raises(ValueError, match="2-D image"):
            v.validate_ccd(NDData(np.zeros(shape), unit="electron"))

    def test_no_unit(self):
        with pytest.raises(u.UnitsError, match="no unit"):
            v.validate_ccd(NDData(np.zeros((3, 3))))

    def test_all_nan_or_masked(self):
        with pytest.raises(ValueError, match="no finite, unmasked pixel"):
            v.validate_ccd(make_ccd().__class__(np.full((3, 3), np.nan), unit="electron"))
        masked = CCDData(np.ones((3, 3)), unit="electron", mask=np.ones((3, 3), bool))
        with pytest.raises(ValueError, match="no finite, unmasked pixel"):
            v.validate_ccd(masked)

    @pytest.mark.parametrize("part", ["mask", "uncertainty"])
    def test_companion_of_wrong_shape(self, part):
        # issue 11: NDData does not check these shapes; a numpy broadcast error followed
        value = np.zeros((3, 3), dtype=bool) if part == "mask" else \
            StdDevUncertainty(np.ones((3, 3)))
        nd = NDData(np.ones((8, 9)), unit="electron", **{part: value})
        with pytest.raises(ValueError, match=rf"ccd.{part} has shape \(3, 3\) but the "
                                             r"data have shape \(8, 9\)"):
            v.validate_ccd(nd)

    def test_scalar_mask_accepted(self):
        nd = NDData(np.ones((4, 4)), unit="electron", mask=np.False_)
        assert v.validate_ccd(nd).shape == (4, 4)

    def test_bad_pixel_mask(self):
        ccd = CCDData(np.array([[1.0, np.nan], [np.inf, 2.0]]), unit="electron",
                      mask=np.array([[True, False], [False, False]]))
        np.testing.assert_array_equal(v.bad_pixel_mask(ccd), [[True, True], [True, False]])


class TestRatio:
    @pytest.mark.parametrize("bad", [1, 0.5, -2, np.nan, np.inf])
    def test_bad_values(self, bad):
        with pytest.raises(ValueError, match="finite number > 1"):
            v.validate_ratio(bad)

    def test_missing_and_type(self):
        with pytest.raises(TypeError, match="required"):
            v.validate_ratio(None)
        with pytest.raises(TypeError, match="number > 1"):
            v.validate_ratio("two")

    def test_quantity(self):
        assert v.validate_ratio(2 * u.dimensionless_unscaled) == 2.0
        with pytest.raises(u.UnitsError):
            v.validate_ratio(2 * u.s)


class TestElectronScale:
    def test_electron(self):
        assert v.electron_scale(make_ccd("electron")) == (1.0, None)

    def test_rate_uses_exptime(self):
        scale, t = v.electron_scale(make_ccd("electron/s", {"EXPTIME": 100.0}))
        assert scale == 100.0 and t == 100.0
        scale, t = v.electron_scale(make_ccd("electron/s"), exposure_time=2 * u.min)
        assert scale == pytest.approx(120.0)

    def test_rate_without_exptime(self):
        with pytest.raises(ValueError, match="No exposure time"):
            v.electron_scale(make_ccd("electron/s"))

    def test_adu_gain(self):
        scale, _ = v.electron_scale(make_ccd("adu"), gain=2 * u.electron / u.adu)
        assert scale == 2.0
        scale, _ = v.electron_scale(make_ccd("adu/s", {"EXPTIME": 10, "GAIN": 1.5}))
        assert scale == pytest.approx(15.0)

    @pytest.mark.parametrize("bad", [-2 * u.electron / u.adu, 0 * u.electron / u.adu,
                                     -2, 0, np.inf * u.electron / u.adu])
    def test_gain_not_positive(self, bad):
        # issue 11: a negative Quantity gain was accepted (uncertainty 0, most
        # pixels flagged as cosmic rays), a zero one ended in ZeroDivisionError
        with pytest.raises(ValueError, match="gain must be a finite positive number"):
            v.get_gain(make_ccd("adu"), bad)
        with pytest.raises(ValueError, match="gain must be a finite positive number"):
            v.electron_scale(make_ccd("adu"), gain=bad)

    def test_gain_wrong_unit(self):
        with pytest.raises(u.UnitsError, match="gain must be convertible to electron / adu"):
            v.get_gain(make_ccd("adu"), 2 * u.s)

    def test_adu_without_gain(self):
        with pytest.raises(ValueError, match="gain"):
            v.electron_scale(make_ccd("adu"))

    def test_scaled_unit(self):
        scale, _ = v.electron_scale(make_ccd(u.Unit("1000 electron")))
        assert scale == pytest.approx(1000.0)

    @pytest.mark.parametrize("unit", ["Jy", "erg / (s cm2 Angstrom)", "m"])
    def test_unconvertible(self, unit):
        with pytest.raises(u.UnitsError, match="Cannot convert"):
            v.electron_scale(make_ccd(unit))

    @pytest.mark.parametrize("bad", [0, -5, np.nan, 3 * u.m])
    def test_bad_exposure_time(self, bad):
        with pytest.raises((ValueError, u.UnitsError)):
            v.get_exposure_time(make_ccd(), bad)


class TestNewLike:
    def test_keeps_everything_and_copies(self):
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.set()
        header = fits.Header({"EXPTIME": 5.0, "OBJECT": "M13"})
        ccd = CCDData(np.ones((4, 4)), unit="electron", wcs=w, meta=header,
                      mask=np.eye(4, dtype=bool),
                      uncertainty=StdDevUncertainty(np.full((4, 4), 0.5)))
        out = v.new_like(ccd, np.zeros((4, 4)))
        assert type(out) is CCDData
        assert out.wcs.wcs.compare(ccd.wcs.wcs)
        assert out.meta["OBJECT"] == "M13"
        np.testing.assert_array_equal(out.mask, ccd.mask)
        np.testing.assert_array_equal(out.uncertainty.array, 0.5)
        out.meta["OBJECT"] = "changed"
        out.mask[0, 0] = False
        assert ccd.meta["OBJECT"] == "M13" and ccd.mask[0, 0]

    def test_nddata_type_kept(self):
        nd = NDData(np.ones((3, 3)), unit="electron")
        out = v.new_like(nd, np.zeros((3, 3)), uncertainty=np.ones((3, 3)))
        assert type(out) is NDData
        assert isinstance(out.uncertainty, StdDevUncertainty)


class TestLogging:
    def test_header_history_and_keywords(self):
        header = fits.Header()
        log_step(header, "f(ratio=2)", {"DNRATIO": (2.0, "ratio")})
        assert header["DNRATIO"] == 2.0
        assert "f(ratio=2)" in str(header["HISTORY"])

    def test_dict_meta_writes_to_fits(self, tmp_path):
        ccd = CCDData(np.ones((2, 2)), unit="electron", meta={})
        log_step(ccd.meta, "f()", {"SIMSEED": (3, "seed")})
        ccd.write(tmp_path / "x.fits")
        assert fits.getheader(tmp_path / "x.fits")["SIMSEED"] == 3

    def test_dict_meta_values_stay_plain(self):
        # issue 11: float(out.meta["EXPTIME"]) failed on a (value, comment) tuple
        meta = {}
        log_step(meta, "f()", {"EXPTIME": (20.0, "[s] exposure"), "DNMODEL": ("x", "model")})
        assert meta == {"EXPTIME": 20.0, "DNMODEL": "x"}
        assert float(meta["EXPTIME"]) == 20.0

    def test_bad_keyword(self):
        with pytest.raises(ValueError, match="FITS-safe"):
            set_keyword({}, "TOOLONGKEY", 1)


def test_sample_image():
    ccd = load_sample_image()
    assert ccd.shape == (256, 256)
    assert ccd.unit == u.electron / u.s
    assert ccd.wcs.has_celestial
    assert np.isfinite(ccd.data).all()
    assert fits.getheader(sample_image_path())["TELESCOP"] == "HST"


def test_output_dtype_any_byte_order():
    for dt, expected in (("<f4", np.float32), (">f4", np.float32), (">f8", np.float64),
                         ("i2", np.float64)):
        assert v.output_dtype(make_ccd().__class__(np.zeros((2, 2), dtype=dt),
                                                   unit="electron")) is expected
