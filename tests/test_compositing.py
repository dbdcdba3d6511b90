"""Keeping the original outside the mask (`DragConfig.keep_outside_mask`)."""

import math

import numpy as np
import pytest
from PIL import Image

from dragwidget import DragConfig, DragRequest
from dragwidget.compositing import edge_feather, edit_weight, keep_original_outside_mask

WIDTH, HEIGHT = 300, 200
POINTS = "120,100,160,100"


def psnr(a, b, where) -> float:
    error = np.mean((np.asarray(a, dtype=np.float64)[where] - np.asarray(b, dtype=np.float64)[where]) ** 2)
    return math.inf if error == 0 else 10 * math.log10(255 ** 2 / error)


def editable_box(width=WIDTH, height=HEIGHT, box=(80, 50, 220, 150)):
    editable = np.zeros((height, width), dtype=bool)
    left, top, right, bottom = box
    editable[top:bottom, left:right] = True
    return editable


def test_feather_scales_with_the_image():
    assert edge_feather((300, 200)) == 2 and edge_feather((1000, 1000)) == 5 and edge_feather((4000, 3000)) == 20


def test_weight_is_zero_outside_one_deep_inside_and_ramps_at_the_edge():
    editable = editable_box(40, 30, (10, 5, 40, 30))          # touches the right and bottom borders
    weight = edit_weight(editable, 3)
    assert (weight[~editable] == 0).all()
    assert (weight[8:, 13:] == 1).all()                        # 4 px from the kept region, up to the image's edge
    row = weight[20, 10:13]                                    # the 3 px band just inside the edge
    assert (0 < row).all() and (row < 1).all() and (np.diff(row) > 0).all()


def test_composite_keeps_the_original_exactly_outside():
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    edited = Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    editable = editable_box()
    combined = np.asarray(keep_original_outside_mask(original, edited, editable, feather=4))
    weight = edit_weight(editable, 4)
    assert np.array_equal(combined[~editable], np.asarray(original)[~editable])
    assert np.array_equal(combined[weight == 1], np.asarray(edited)[weight == 1])
    band = (weight > 0) & (weight < 1)
    low = np.minimum(np.asarray(original), np.asarray(edited))[band]
    high = np.maximum(np.asarray(original), np.asarray(edited))[band]
    assert band.any() and ((low <= combined[band]) & (combined[band] <= high)).all()
    with pytest.raises(ValueError, match="sizes differ"):
        keep_original_outside_mask(original, edited, editable[:-1])


def test_the_editor_keeps_the_original_outside_the_mask_when_asked(editor, make_image):
    picture = make_image(WIDTH, HEIGHT, seed=5)
    editable = editable_box()
    plain = editor.run(DragRequest(picture, POINTS, editable, prompt="a disc"))
    kept = editor.run(DragRequest(picture, POINTS, editable, prompt="a disc",
                                  config=editor.config.replace(keep_outside_mask=True)))
    assert DragConfig().keep_outside_mask is False             # off by default in the API
    assert not plain.kept_outside_mask and not plain.report()["kept_outside_mask"]
    assert kept.kept_outside_mask and kept.report()["kept_outside_mask"]
    assert kept.image.size == (WIDTH, HEIGHT)

    outside = ~editable
    assert np.array_equal(np.asarray(kept.image)[outside], picture[outside])
    weight = edit_weight(editable, edge_feather((WIDTH, HEIGHT)))
    assert np.array_equal(np.asarray(kept.image)[weight == 1], np.asarray(plain.image)[weight == 1])
    assert psnr(kept.image, picture, outside) == math.inf
    assert psnr(plain.image, picture, outside) < 40           # the working-resolution decode, scaled up

    # Without a mask there is nothing to keep: the option changes nothing.
    unmasked = editor.run(DragRequest(picture, POINTS, prompt="a disc", config=editor.config.replace(keep_outside_mask=True)))
    assert not unmasked.kept_outside_mask
    assert np.array_equal(np.asarray(unmasked.image),
                          np.asarray(editor.run(DragRequest(picture, POINTS, prompt="a disc")).image))
