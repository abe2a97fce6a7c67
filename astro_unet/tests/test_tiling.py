# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_unet.tiling (pure numpy: no torch needed)."""

import io
import sys

import numpy as np
import pytest

from astro_unet.tiling import feather_window, pad_for_plan, plan_tiles, process_tiles


def identity(tiles):
    assert tiles.dtype == np.float32 and tiles.ndim == 3
    return tiles[:, None].copy()


def ramp(shape):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return 3.0 * yy - 2.0 * xx + 1000.0


@pytest.mark.parametrize("mode", ["feather", "paper"])
@pytest.mark.parametrize("shape", [(96, 96), (97, 131), (33, 200), (1, 50), (50, 1), (5, 7)])
def test_identity_constant_and_ramp(shape, mode):
    kwargs = dict(tile_size=32, overlap=8 if mode == "feather" else 24, batch_size=3,
                  size_multiple=8, mode=mode)
    const = np.full(shape, 7.25)
    out = process_tiles(const, identity, **kwargs)
    assert out.shape == (1,) + shape
    np.testing.assert_allclose(out[0], const, rtol=1e-12)
    image = ramp(shape)
    out = process_tiles(image, identity, **kwargs)[0]
    # no steps at tile boundaries: identical to the input to float32 precision
    assert np.abs(out - image).max() < 1e-6 * np.abs(image).max()


def test_flux_conserved_random_image():
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 50.0, (150, 170))
    out = process_tiles(image, identity, tile_size=48, overlap=16, batch_size=4,
                        size_multiple=16)[0]
    assert abs(out.sum() - image.sum()) < 1e-6 * image.sum()
    assert np.abs(out - image).max() < 1e-6 * image.max()


def test_image_smaller_than_tile_is_padded_and_cropped():
    image = np.arange(5 * 7, dtype=float).reshape(5, 7)
    seen = []

    def func(tiles):
        seen.append(tiles.shape)
        return tiles[:, None]

    out = process_tiles(image, func, tile_size=512, overlap=32, size_multiple=16)[0]
    assert seen == [(1, 16, 16)]            # one tile, padded to the multiple
    np.testing.assert_allclose(out, image)


def test_plan_covers_every_pixel_with_overlap():
    for shape, tile, overlap, mult in [((1000, 777), 256, 32, 16), ((300, 301), 64, 16, 8),
                                       ((1024, 1024), 256, 224, 16), ((95, 1000), 100, 0, 1)]:
        plan = plan_tiles(shape, tile_size=tile, overlap=overlap, size_multiple=mult)
        th, tw = plan.tile_shape
        assert th % mult == 0 and tw % mult == 0
        count = np.zeros(plan.padded_shape, int)
        for y, x in plan.origins:
            count[y:y + th, x:x + tw] += 1
        (top, bottom), (left, right) = plan.pad
        assert count[top:count.shape[0] - bottom, left:count.shape[1] - right].min() >= 1
        for starts, t, n in ((plan.y_starts, th, plan.padded_shape[0]),
                             (plan.x_starts, tw, plan.padded_shape[1])):
            assert starts[0] == 0 and starts[-1] == n - t        # flush with the edges
            assert all(s % mult == 0 for s in starts)
            if len(starts) > 1:
                assert np.diff(starts).max() <= t - overlap        # at least the overlap
                assert np.diff(starts).min() > 0


def test_paper_mode_computes_interior_pixels_64_times():
    plan = plan_tiles((1024, 1024), tile_size=256, overlap=224, size_multiple=16)
    count = np.zeros(plan.padded_shape, int)
    for y, x in plan.origins:
        count[y:y + 256, x:x + 256] += 1
    assert count[512, 512] == 64
    assert 35 < plan.coverage < 64   # fewer at the image edges


def test_paper_mode_defaults_and_plain_average():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(300, 300))
    calls = []

    def func(tiles):
        calls.append(len(tiles))
        return tiles[:, None] + 1.0

    out = process_tiles(image, func, mode="paper", batch_size=4, size_multiple=16)[0]
    # 256-pixel tiles moved by 32 pixels: 304 padded -> 3 x 3 tiles
    assert sum(calls) == 9
    np.testing.assert_allclose(out, image + 1.0, rtol=1e-6, atol=1e-6)


def test_feather_window_properties():
    w = feather_window((64, 48), 16)
    assert w.shape == (64, 48)
    assert w.min() > 0 and w.max() == 1.0
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert np.all(w[16:48, 16:32] == 1.0)
    # sides without a neighbour are flat
    w = feather_window((64, 48), 16, sides=(False, True, False, True))
    assert np.all(w[0, :32] == 1.0) and np.all(w[:48, 0] == 1.0)
    assert w[-1, -1] < 1e-3
    # taper limited to half the tile
    assert feather_window((8, 8), 100).min() > 0


def test_feathering_hides_tile_edge_artifacts():
    """An artefact at tile edges (like zero padding) is suppressed by the taper."""
    image = ramp((200, 200))
    amplitude = 1000.0

    def artefact(tiles):
        out = tiles[:, None].astype(float).copy()
        out[..., :2, :] += amplitude
        out[..., -2:, :] += amplitude
        out[..., :, :2] += amplitude
        out[..., :, -2:] += amplitude
        return out

    kw = dict(tile_size=64, overlap=32, batch_size=8, size_multiple=8)
    feather = process_tiles(image, artefact, **kw)[0] - image
    flat = process_tiles(image, artefact, mode="paper", **kw)[0] - image
    interior = (slice(2, -2), slice(2, -2))   # the image's own edges have no neighbour
    assert np.abs(feather[interior]).max() < 0.02 * amplitude
    assert np.abs(flat[interior]).max() > 0.2 * amplitude


def test_multichannel_output_and_batching():
    image = ramp((70, 90))
    sizes = []

    def func(tiles):
        sizes.append(len(tiles))
        return np.stack([tiles, 2 * tiles, np.ones_like(tiles)], axis=1)

    out = process_tiles(image, func, tile_size=32, overlap=8, batch_size=5, size_multiple=8)
    assert out.shape == (3, 70, 90)
    assert max(sizes) <= 5
    np.testing.assert_allclose(out[1], 2 * image, rtol=1e-6)
    np.testing.assert_allclose(out[2], 1.0)


def test_errors():
    image = np.zeros((40, 40))
    with pytest.raises(ValueError, match="shape"):
        process_tiles(image, lambda t: t, tile_size=16, overlap=4)
    with pytest.raises(ValueError, match="mode"):
        process_tiles(image, identity, tile_size=16, overlap=4, mode="fancy")
    with pytest.raises(ValueError, match="overlap"):
        process_tiles(image, identity, tile_size=16, overlap=16)
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles((40, 40), tile_size=16, overlap=-1)
    with pytest.raises(ValueError, match="batch_size"):
        process_tiles(image, identity, tile_size=16, overlap=4, batch_size=0)
    with pytest.raises(ValueError, match="2-D"):
        process_tiles(np.zeros((2, 3, 4)), identity, tile_size=16, overlap=4)
    with pytest.raises(ValueError, match="tile_size"):
        plan_tiles((40, 40), tile_size=0, overlap=0)


def test_progress_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)   # import fails -> plain lines
    process_tiles(np.zeros((64, 64)), identity, tile_size=16, overlap=4, progress=True)
    err = capsys.readouterr().err
    assert "tiles" in err and "100 %" in err


def test_progress_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    process_tiles(np.zeros((64, 64)), identity, tile_size=16, overlap=4, progress=True)
    assert "tile" in capsys.readouterr().err


def test_tiling_does_not_import_torch():
    import subprocess

    code = ("import sys, astro_unet.tiling; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fit_shrinks_tiles_without_adding_any():
    fitted = plan_tiles((1024, 2048), tile_size=512, overlap=32, size_multiple=16)
    loose = plan_tiles((1024, 2048), tile_size=512, overlap=32, size_multiple=16, fit=False)
    assert len(fitted.y_starts) == len(loose.y_starts) == 3
    assert len(fitted.x_starts) == len(loose.x_starts)
    assert fitted.tile_shape == (368, 448) and loose.tile_shape == (512, 512)
    assert fitted.coverage < 1.2 < loose.coverage
    assert np.diff(fitted.y_starts).max() <= 368 - 32


def test_pad_for_plan_reflects():
    plan = plan_tiles((3, 5), tile_size=64, overlap=0, size_multiple=8)
    image = np.arange(15.0).reshape(3, 5)
    padded = pad_for_plan(image, plan)
    assert padded.shape == (8, 8)
    (top, _), (left, _) = plan.pad
    np.testing.assert_array_equal(padded[top:top + 3, left:left + 5], image)
    np.testing.assert_array_equal(padded[top - 1, left:left + 5], image[1])
    with pytest.raises(ValueError, match="differs"):
        pad_for_plan(np.zeros((4, 5)), plan)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_without_tqdm(monkeypatch):
    # issue 11: --progress printed a line per tile; on a terminal one line is redrawn
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    process_tiles(np.zeros((64, 64)), identity, tile_size=16, overlap=4, progress=True)
    text = terminal.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # a single line, ended at the end
    frames = text.rstrip("\n").split("\r")[1:]
    assert len(frames) > 2 and frames[0].startswith("astro_unet tiles: [....")
    assert frames[-1].startswith("astro_unet tiles: [" + "#" * 30 + "]")
    assert "100 %" in frames[-1]


def test_progress_uses_tqdm_when_installed(monkeypatch):
    import types

    calls = []

    class FakeTqdm:
        def __init__(self, **kwargs):
            calls.append(("init", kwargs["total"], kwargs["unit"]))

        def update(self, n):
            calls.append(("update", n))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=FakeTqdm))
    process_tiles(np.zeros((64, 64)), identity, tile_size=16, overlap=4, batch_size=2,
                  progress=True)
    assert calls[0][0] == "init" and calls[0][2] == "tile" and calls[-1] == ("close",)
    assert sum(c[1] for c in calls if c[0] == "update") == calls[0][1]
