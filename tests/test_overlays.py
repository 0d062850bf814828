"""Colour-coded class maps, contour overlays and PNG writing (``medbalance.report.overlays``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from medbalance.report.overlays import (
    BOTH_COLOUR,
    PALETTE,
    PRED_COLOUR,
    TARGET_COLOUR,
    colorize,
    contours,
    overlay_contours,
    palette,
    save_png,
    tile_grid,
    to_rgb,
)


def test_colorize_uses_fixed_palette_and_black_background():
    labels = np.array([[0, 1, 2], [3, 4, 0]])
    rgb = colorize(labels, 5)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0]
    for (i, j), k in np.ndenumerate(labels):
        assert rgb[i, j].tolist() == PALETTE[k].tolist()


def test_palette_is_stable_when_classes_are_added():
    small, large = palette(4), palette(25)
    np.testing.assert_array_equal(large[:4], small)
    assert len({tuple(c) for c in large}) == 25


@pytest.mark.parametrize(
    ("labels", "num_classes", "error", "message"),
    [
        (np.array([[0, 7]]), 7, ValueError, "labels has label 7 but num_classes is 7"),
        (np.array([[-1, 0]]), 3, ValueError, "labels has label -1"),
        (np.zeros((2, 2), np.float32), 3, TypeError, "integer"),
        (np.zeros((1, 2, 2), int), 3, ValueError, r"labels must be \(H, W\)"),
    ],
)
def test_colorize_rejects_bad_labels(labels, num_classes, error, message):
    with pytest.raises(error, match=message):
        colorize(labels, num_classes)


def test_contours_of_a_square_are_its_one_pixel_border():
    lab = np.zeros((7, 7), int)
    lab[1:6, 1:6] = 2
    edge = contours(lab)
    expected = np.zeros((7, 7), bool)
    expected[1:6, 1:6] = True
    expected[2:5, 2:5] = False
    np.testing.assert_array_equal(edge, expected)


def test_contours_separate_touching_classes():
    lab = np.zeros((4, 6), int)
    lab[:, :3], lab[:, 3:] = 1, 2
    edge = contours(lab)
    assert edge[1, 2] and edge[1, 3]  # both sides of the class boundary


@settings(max_examples=25, deadline=None)
@given(arrays(np.int64, (9, 11), elements=st.integers(0, 3)))
def test_contours_are_foreground_and_within_labels(lab):
    edge = contours(lab)
    assert not edge[lab == 0].any()
    # Every foreground pixel without a differing neighbour is interior.
    padded = np.pad(lab, 1, constant_values=-1)
    same = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]) == lab
    np.testing.assert_array_equal(edge, (lab > 0) & ~same.all(0))


def test_overlay_colours_prediction_target_and_agreement():
    target = np.zeros((10, 10), int)
    target[2:8, 2:8] = 1
    pred = np.zeros_like(target)
    pred[2:8, 2:5] = 1
    out = overlay_contours(np.full((1, 10, 10), 0.5, np.float32), pred, target)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert out[2, 2].tolist() == list(BOTH_COLOUR)  # shared corner
    assert out[5, 4].tolist() == list(PRED_COLOUR)  # prediction edge inside the target
    assert out[5, 7].tolist() == list(TARGET_COLOUR)  # target edge the prediction missed
    assert out[5, 3].tolist() == [128, 128, 128]  # untouched interior keeps the image


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((6, 6)),
        np.zeros((6, 6, 3), np.uint8),
        np.zeros((3, 6, 6), np.float32),
        np.zeros((6, 6, 1), np.uint8),
    ],
)
def test_overlay_accepts_channel_first_and_last(image):
    pred = np.zeros((6, 6), int)
    pred[1:4, 1:4] = 1
    out = overlay_contours(image, pred)
    assert out.shape == (6, 6, 3)
    assert out[1, 1].tolist() == list(PRED_COLOUR)


def test_overlay_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="target must have the shape of pred"):
        overlay_contours(np.zeros((4, 4)), np.zeros((4, 4), int), np.zeros((5, 4), int))
    with pytest.raises(ValueError, match="image must be"):
        overlay_contours(np.zeros((5, 4)), np.zeros((4, 4), int))


def test_save_png_round_trips(tmp_path):
    rgb = colorize(np.arange(12).reshape(3, 4) % 5, 5)
    path = save_png(tmp_path / "sub" / "a.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(np.asarray(Image.open(save_png(tmp_path / "g.png", gray))), gray)


def test_save_png_rejects_non_uint8(tmp_path):
    with pytest.raises(TypeError, match="array must be uint8"):
        save_png(tmp_path / "a.png", np.zeros((2, 2), np.float32))


def test_to_rgb_shows_the_first_channel_of_a_multichannel_image():
    image = np.stack([np.full((4, 5), 10, np.uint8), np.full((4, 5), 200, np.uint8)])  # e.g. two MR sequences
    assert to_rgb(image, (4, 5)).tolist() == np.full((4, 5, 3), 10, np.uint8).tolist()
    assert to_rgb(np.zeros((4, 4, 5), np.uint8), (4, 5)).shape == (4, 5, 3)  # four channels: the first one


def test_tile_grid_places_every_enlarged_tile_between_white_gaps():
    rng = np.random.default_rng(0)
    grey, rgb = (2, 3), (2, 3, 3)
    rows = [[rng.integers(0, 255, grey, dtype=np.uint8), rng.integers(0, 255, rgb, dtype=np.uint8)] for _ in range(3)]
    gap, k = 1, 2
    grid = tile_grid(rows, gap=gap, scale=k)
    assert grid.shape == (3 * (2 * k + gap) - gap, 2 * (3 * k + gap) - gap, 3) and grid.dtype == np.uint8
    white = np.ones(grid.shape[:2], bool)
    for r, row in enumerate(rows):
        for c, t in enumerate(row):
            y, x = r * (2 * k + gap), c * (3 * k + gap)
            rgb = t if t.ndim == 3 else np.stack([t] * 3, axis=-1)
            for i in range(2 * k):  # pixel (i, j) of the enlarged tile is pixel (i // k, j // k) of the tile
                for j in range(3 * k):
                    assert grid[y + i, x + j].tolist() == rgb[i // k, j // k].tolist()
            white[y : y + 2 * k, x : x + 3 * k] = False
    assert (grid[white] == 255).all()


@pytest.mark.parametrize(
    "rows, kwargs, message",
    [
        ([], {}, "rows is empty"),
        ([[np.zeros((2, 2), np.uint8)], []], {}, "row 1 has 0 tiles, row 0 has 1"),
        ([[np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8)]], {}, "tiles must be uint8"),
        ([[np.zeros((2, 2), np.float32)]], {}, "tiles must be uint8"),
        ([[np.zeros((2, 2), np.uint8)]], {"scale": 0}, "scale must be a positive int, got 0"),
        ([[np.zeros((2, 2), np.uint8)]], {"gap": -1}, "gap must be an int >= 0, got -1"),
    ],
)
def test_tile_grid_rejects_bad_input(rows, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tile_grid(rows, **kwargs)
