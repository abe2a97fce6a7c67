# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_unet.training.data: exposure table, loader, crops, dataset."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table

from astro_unet.training import (
    EXPOSURE_TABLE_COLUMNS,
    RealImageDataset,
    dihedral_augment,
    load_training_image,
    random_crops,
    read_exposure_table,
)


def _row(path, **kw):
    row = dict(path=path, hdu="0", weight_hdu="", unit="electron/s", zero_level=0.0,
               bias_section="", trim_section="", saturation=0.0, exposure_time=100.0,
               exptime_source="test", gain=1.0, gain_source="test", read_noise=3.0,
               sky_level=10.0, sky_subtracted=False, noise_correlation=1.0, split="train",
               notes="")
    row.update(kw)
    return row


def _table(rows):
    return Table(rows=[[r[c] for c in EXPOSURE_TABLE_COLUMNS] for r in rows],
                 names=EXPOSURE_TABLE_COLUMNS)


# ---------------------------------------------------------------------------
# the shipped exposure table
# ---------------------------------------------------------------------------

def test_shipped_table_content():
    t = read_exposure_table()
    assert tuple(t.colnames) == EXPOSURE_TABLE_COLUMNS
    assert t["exposure_time"].unit == u.s
    split = dict(zip(t["path"], t["split"]))
    assert split["hst/wfc3uvis_f555w_hla_11360_e1_crop.fits"] == "test"
    assert split["hst/wfc3uvis_f606w_hla_11730_04_crop.fits"] == "test"
    assert split["hst/wfpc2_f814w_abell478_sci_wht.fits"] == "test"
    assert {split[f"ground/m13_blue_000{i}.fits"] for i in range(1, 6)} == {"realnoise"}
    assert "validation" in split.values() and "train" in split.values()
    usable = t[t["split"] != "excluded"]
    assert np.all(usable["exposure_time"] > 0) and np.all(usable["gain"] > 0)
    assert np.all(usable["noise_correlation"] >= 1.0)
    for row in t:
        u.Unit(str(row["unit"]))                 # every unit parses
        assert row["exptime_source"] and row["gain_source"]
    assert any("Made by: python scripts/make_exposure_table.py" in c
               for c in t.meta["comments"])


def test_table_script_describes_the_shipped_table():
    """scripts/make_exposure_table.py (source checkouts only) imports and matches the table."""
    script = Path(__file__).resolve().parents[3] / "scripts" / "make_exposure_table.py"
    if not script.is_file():
        pytest.skip("not a source checkout")
    spec = importlib.util.spec_from_file_location("make_exposure_table", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    t = read_exposure_table()
    recipes = module._recipes()
    assert [r["path"] for r in recipes] == list(t["path"])
    assert [r["split"] for r in recipes] == list(t["split"])


def test_read_exposure_table_checks(tmp_path):
    t = _table([_row("a.fits")])
    good = tmp_path / "t.ecsv"
    t.write(good, format="ascii.ecsv")
    assert len(read_exposure_table(good)) == 1
    bad = t.copy()
    bad["split"] = ["training"]
    bad.write(tmp_path / "bad.ecsv", format="ascii.ecsv")
    with pytest.raises(ValueError, match="Unknown split"):
        read_exposure_table(tmp_path / "bad.ecsv")
    t.remove_column("gain")
    t.write(tmp_path / "nogain.ecsv", format="ascii.ecsv")
    with pytest.raises(ValueError, match="lacks the columns"):
        read_exposure_table(tmp_path / "nogain.ecsv")


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------

def test_load_rate_image_masks_padding_nan_weight_and_saturation(tmp_path):
    data = np.full((20, 30), 0.5, dtype=np.float32)
    data[:, :4] = 0.0            # padding
    data[5, 5] = np.nan
    data[10, 10] = 99.0          # saturated
    weight = np.ones_like(data)
    weight[15, 15] = 0.0
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI"),
                         fits.ImageHDU(weight, name="WHT")])
    hdul.writeto(tmp_path / "drz.fits")
    original = fits.getdata(tmp_path / "drz.fits", "SCI").copy()
    row = _row("drz.fits", hdu="SCI", weight_hdu="WHT", saturation=50.0,
               exposure_time=400.0, read_noise=4.0, sky_level=12.0, split="test")
    ccd = load_training_image(row, tmp_path)
    assert isinstance(ccd, CCDData) and ccd.unit == u.electron
    assert ccd.data.dtype == np.float32
    assert ccd.data[0, 10] == pytest.approx(200.0)              # 0.5 e/s * 400 s
    assert ccd.mask[:, :4].all() and ccd.mask[5, 5] and ccd.mask[10, 10] and ccd.mask[15, 15]
    assert ccd.mask.sum() == 20 * 4 + 3
    assert np.all(ccd.data[ccd.mask] == 0)
    h = ccd.header
    assert h["EXPTIME"] == 400.0 and h["GAIN"] == 1.0 and h["RDNOISE"] == 4.0
    assert h["SKYLEVEL"] == 12.0 and h["SPLIT"] == "test" and h["SRCUNIT"] == "electron/s"
    assert "load_training_image" in str(h["HISTORY"])
    np.testing.assert_array_equal(fits.getdata(tmp_path / "drz.fits", "SCI"), original)


def test_load_counts_with_gain_and_zero_level(tmp_path):
    fits.writeto(tmp_path / "raw.fits", np.full((8, 8), 520, dtype=np.uint16))
    row = _row("raw.fits", unit="adu", zero_level=500.0, gain=2.0, exposure_time=5.0)
    ccd = load_training_image(row, tmp_path)
    np.testing.assert_allclose(ccd.data, 40.0)                  # (520 - 500) * 2
    rate = _row("raw.fits", unit="adu/s", gain=2.0, exposure_time=5.0)
    np.testing.assert_allclose(load_training_image(rate, tmp_path).data, 520 * 2 * 5)
    nmgy = _row("raw.fits", unit="nanomaggy", gain=1000.0)
    np.testing.assert_allclose(load_training_image(nmgy, tmp_path).data, 520000.0)


def test_load_raw_frame_overscan_and_trim(tmp_path):
    rng = np.random.default_rng(1)
    raw = np.empty((30, 40))
    bias = 300.0 + np.arange(30)[:, None]            # bias varying along the rows
    raw[:] = bias + 50.0
    raw[:, :10] = bias + rng.normal(0, 0.1, (30, 10))  # overscan columns 1-10
    fits.writeto(tmp_path / "ccd.fits", raw.astype(np.float32))
    row = _row("ccd.fits", unit="adu", gain=1.5, bias_section="[1:10,1:30]",
               trim_section="[13:40,1:30]")
    ccd = load_training_image(row, tmp_path)
    assert ccd.shape == (30, 28)
    np.testing.assert_allclose(ccd.data, 75.0, atol=0.5)        # 50 adu * 1.5


def test_load_needs_a_data_dir(monkeypatch):
    monkeypatch.delenv("ASTRO_UNET_DATA", raising=False)
    with pytest.raises(ValueError, match="ASTRO_UNET_DATA"):
        load_training_image(_row("a.fits"))


def test_load_uses_environment_variable(tmp_path, monkeypatch):
    fits.writeto(tmp_path / "a.fits", np.ones((4, 4), dtype=np.float32))
    monkeypatch.setenv("ASTRO_UNET_DATA", str(tmp_path))
    assert load_training_image(_row("a.fits")).data[0, 0] == 100.0


# ---------------------------------------------------------------------------
# crops and augmentation
# ---------------------------------------------------------------------------

def test_random_crops_reject_bad_regions():
    img = np.ones((100, 100), dtype=np.float32)
    img[:, :60] = 0.0                       # zero padding
    img[70:80, 70:80] = np.nan
    crops, masks, corners = random_crops(img, size=20, rng=1, n=40)
    assert crops.shape == (40, 20, 20) and masks.shape == (40, 20, 20)
    assert np.all(masks.mean(axis=(1, 2)) <= 0.1)
    assert np.all(np.isfinite(crops))
    for (y, x), c, m in zip(corners, crops, masks):
        np.testing.assert_array_equal(m, ~np.isfinite(img[y:y + 20, x:x + 20])
                                      | (img[y:y + 20, x:x + 20] == 0))
        assert np.all(c[~m] == 1.0) and np.all(c[m] == 0.0)
    # stricter threshold: no crop may touch a bad pixel
    _, masks0, _ = random_crops(img, size=20, rng=2, n=20, max_bad_fraction=0.0)
    assert not masks0.any()


def test_random_crops_reproducible_mask_and_errors():
    rng = np.random.default_rng(0)
    img = rng.random((64, 64)) + 1.0
    mask = np.zeros(img.shape, bool)
    mask[:, 32:] = True
    a = random_crops(img, mask, size=16, rng=5, n=5)
    b = random_crops(CCDData(img, unit="electron", mask=mask), size=16, rng=5, n=5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert np.all(a[2][:, 1] <= 32 - 16 + 1)     # left half (<= 10 % masked)
    with pytest.raises(ValueError, match="does not fit"):
        random_crops(img, size=65, rng=0)
    with pytest.raises(ValueError, match="No crop"):
        random_crops(np.zeros((32, 32)), size=16, rng=0, max_tries=10)


def test_dihedral_augment_keeps_values_and_pairs():
    a = np.arange(12.0).reshape(3, 4)
    b = a * 10
    seen = set()
    for k in range(4):
        for flip in (False, True):
            ta, tb = dihedral_augment(a, b, k=k, flip=flip)
            np.testing.assert_array_equal(tb, ta * 10)          # same transform
            assert sorted(ta.ravel()) == sorted(a.ravel())
            seen.add(ta.tobytes() + bytes(ta.shape))
    assert len(seen) == 8
    ra, = dihedral_augment(a, rng=3)
    rb, = dihedral_augment(a, rng=3)
    np.testing.assert_array_equal(ra, rb)


# ---------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------

@pytest.fixture
def tiny_data(tmp_path):
    rng = np.random.default_rng(2)
    big = (rng.random((48, 48)) + 1.0).astype(np.float32)
    big[:, :8] = 0.0
    fits.writeto(tmp_path / "big.fits", big)
    fits.writeto(tmp_path / "small.fits", np.ones((10, 10), dtype=np.float32))
    fits.writeto(tmp_path / "val.fits", np.ones((40, 40), dtype=np.float32))
    table = _table([
        _row("big.fits", unit="adu", gain=2.0, exposure_time=30.0),
        _row("small.fits"),
        _row("val.fits", split="validation"),
    ])
    return tmp_path, table


def test_real_image_dataset(tiny_data):
    path, table = tiny_data
    ds = RealImageDataset(path, table=table, size=16, length=12, seed=4)
    assert len(ds) == 12 and ds.skipped == ["small.fits"]
    item = ds[3]
    assert set(item) >= {"image", "mask", "exposure_time", "read_noise", "sky_level",
                         "sky_subtracted", "noise_correlation", "path"}
    assert item["image"].shape == (16, 16) and item["image"].dtype == np.float32
    assert item["path"] == "big.fits" and item["exposure_time"] == 30.0
    good = item["image"][~item["mask"]]
    assert np.all((good >= 2.0) & (good < 4.0))                # electrons = value * gain 2
    assert item["mask"].mean() <= 0.1
    np.testing.assert_array_equal(ds[3]["image"], item["image"])  # reproducible
    ds.set_epoch(1)
    assert not np.array_equal(ds[3]["image"], item["image"])
    with pytest.raises(IndexError):
        ds[12]
    val = RealImageDataset(path, table=table, split="validation", size=16, length=2)
    assert val[0]["path"] == "val.fits"
    with pytest.raises(ValueError, match="No image"):
        RealImageDataset(path, table=table, split="test", size=16)
