"""ShapesBench metrics on constructed images whose answers are known without the model, for both
families of pictures (the palette scenes and the drawn ones)."""

import math

import numpy as np
import pytest

from dragwidget.toy.shapes_bench import (
    PSNR_CAP, WRECKED_BACKGROUND_ERROR, centroid, color_region, iou, make_cases, psnr_outside, score,
)

LENGTHS = {"scenes": (0.08, 0.40), "drawn": (0.08, 0.22)}


def object_masks(scene):
    return scene.object_masks()


def render(scene):
    return scene.render()


@pytest.fixture(scope="module", params=["scenes", "drawn"])
def cases(request):
    return make_cases(24, seed=3, family=request.param)


def test_cases_are_seeded_and_varied(cases):
    family = cases[0].family
    again = make_cases(24, seed=3, family=family)
    assert [c.pairs for c in cases] == [c.pairs for c in again]
    assert [c.pairs for c in make_cases(24, seed=4, family=family)] != [c.pairs for c in cases]
    assert any(len(c.scene.objects) >= 2 for c in cases)
    if family == "scenes":
        assert any(len(c.pairs) >= 2 for c in cases), "some cases must have several pairs"
        assert any(len(c.moves) >= 2 for c in cases), "some cases must drag several objects"
    else:
        assert all(len(c.pairs) == 1 for c in cases)
        assert {c.scene.size for c in cases} == {64, 128}
        assert len({o.kind for c in cases for o in c.scene.objects}) >= 6


def test_translations_stay_in_range_and_inside_the_mask(cases):
    low, high = LENGTHS[cases[0].family]
    for case in cases:
        size = case.scene.size
        for index, (dx, dy) in case.moves.items():
            assert low * size - 1e-6 <= math.hypot(dx, dy) <= high * size + 1e-6
        expected_masks = object_masks(case.expected_scene)
        original_masks = object_masks(case.scene)
        for pair in case.pairs:
            x, y = pair["target"]
            assert 0 <= x < size and 0 <= y < size
            assert original_masks[pair["object"]][round(pair["handle"][1]), round(pair["handle"][0])], "handle on its object"
            # the mask covers where the object is and where it must go
            assert case.mask[original_masks[pair["object"]]].all()
            assert case.mask[expected_masks[pair["object"]]].all()


def test_perfect_edit_scores_perfectly(cases):
    for case in cases:
        perfect = render(case.expected_scene)
        metrics = score(case, perfect)
        assert metrics["distance_px"] < 1.5, case.name  # anti-aliased edges shift a colour centroid by ~1 px
        assert metrics["relative_distance"] < 0.15, case.name
        # drawn pictures are half anti-aliased at 4x: on a 5-px object the half-covered edge pixels
        # that the mask counts are too far from the object's colour to be found (IoU 0.83 measured)
        assert metrics["iou"] > (0.9 if case.family == "scenes" else 0.8), case.name
        assert metrics["psnr_outside_mask"] == PSNR_CAP  # nothing changed outside the mask
        assert metrics["others_stayed"] == 1.0
        assert metrics["background_error_outside"] == 0 and metrics["background_error_path"] == 0
        assert not metrics["wrecked"]


def test_no_edit_scores_as_the_baseline(cases):
    for case in cases:
        metrics = score(case, case.image)
        assert 0.9 < metrics["relative_distance"] < 1.1, case.name
        pair = case.pairs[0]
        original = object_masks(case.scene)[pair["object"]]
        moved = object_masks(case.expected_scene)[pair["object"]]
        assert metrics["iou"] <= iou(original, moved) + 0.1


def test_half_way_drag_scores_half(cases):
    case = next(c for c in cases if len(c.moves) == 1 and len(c.scene.objects) == 1)
    (index, (dx, dy)), = case.moves.items()
    half = case.scene.with_object(index, case.scene.objects[index].moved(dx / 2, dy / 2))
    assert score(case, render(half))["relative_distance"] == pytest.approx(0.5, abs=0.08)


def test_background_errors_are_measured_where_the_background_must_stay(cases):
    """A background shifted by 10 grey levels outside the mask reads 10 there and nothing along the
    path; a path painted over reads there; a shift beyond the bar is a wrecked picture."""
    case = cases[0]
    perfect = render(case.expected_scene).astype(np.int16)
    shifted = perfect.copy()
    shifted[~case.mask] = np.clip(shifted[~case.mask] + 10, 0, 255)
    metrics = score(case, shifted.astype(np.uint8))
    expected = np.abs(shifted - perfect)[~case.mask].mean()
    assert metrics["background_error_outside"] == pytest.approx(expected, abs=1e-4)
    assert 5 < metrics["background_error_outside"] <= 10
    assert metrics["background_error_path"] == 0 and not metrics["wrecked"]
    smeared = perfect.copy()
    away = case.mask.copy()
    for mask in (*object_masks(case.scene), *object_masks(case.expected_scene)):
        away &= ~mask
    smeared[away] = 255 - smeared[away]
    smeared_metrics = score(case, smeared.astype(np.uint8))
    assert smeared_metrics["background_error_outside"] == 0
    assert smeared_metrics["background_error_path"] > WRECKED_BACKGROUND_ERROR and smeared_metrics["wrecked"]


def test_vanished_object_counts_as_not_moved_and_lost_other_counts(cases):
    case = next(c for c in cases if len(c.scene.objects) > len(c.moves))
    image = case.image.copy()
    other = next(i for i in range(len(case.scene.objects)) if i not in case.moves)
    image[object_masks(case.scene)[other]] = case.image[0, 0]  # paint the other object out
    assert score(case, image)["others_stayed"] < 1.0


def test_psnr_outside_mask_known_value():
    reference = np.full((10, 10, 3), 100, np.uint8)
    result = reference.copy()
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    result[mask] = 0            # changes inside the mask do not count
    result[~mask] = 110         # a uniform error of 10 outside
    assert psnr_outside(result, reference, mask) == pytest.approx(20 * math.log10(255 / 10), abs=1e-6)


def test_colour_region_centroid_and_iou():
    image = np.zeros((20, 30, 3), np.uint8)
    image[5:10, 20:26] = (220, 40, 40)
    region = color_region(image, (225, 45, 35))
    assert region.sum() == 30
    assert centroid(region) == pytest.approx((22.5, 7.0))
    other = np.zeros_like(region)
    other[5:10, 23:29] = True
    assert iou(region, other) == pytest.approx(15 / 45)


def test_recoloured_or_shrunk_object_is_lost_and_counts_as_not_moved():
    """An object that arrives in another colour, or a third of its size, is lost: the independent
    scorer's rule (found by its colour within tolerance), and it scores as if it had not moved."""
    from dataclasses import replace

    from dragwidget.toy.shapes import OBJECT_COLORS

    cases = make_cases(24, seed=3)
    case = next(c for c in cases if len(c.moves) == 1)
    (index, _), = case.moves.items()
    moved = case.expected_scene.objects[index]
    intact = score(case, render(case.expected_scene))
    assert intact["lost_objects"] == 0 and intact["dragged_objects"] == 1
    unused = next(name for name in OBJECT_COLORS if name not in {o.color for o in case.scene.objects})
    recoloured = score(case, render(case.expected_scene.with_object(index, replace(moved, color=unused))))
    shrunk = score(case, render(case.expected_scene.with_object(index, replace(moved, radius=moved.radius * 0.55))))
    for metrics in (recoloured, shrunk):
        assert metrics["lost_objects"] == 1
        assert metrics["relative_distance"] == pytest.approx(1.0)
    slightly_smaller = score(case, render(case.expected_scene.with_object(index, replace(moved, radius=moved.radius * 0.8))))
    assert slightly_smaller["lost_objects"] == 0 and slightly_smaller["relative_distance"] < 0.15


def test_a_drawn_object_in_another_colour_is_lost():
    from dataclasses import replace

    case = make_cases(6, seed=9, family="drawn")[0]
    (index, _), = case.moves.items()
    moved = case.expected_scene.objects[index]
    inverted = tuple(255 - v for v in moved.rgb)
    recoloured = score(case, render(case.expected_scene.with_object(index, replace(moved, rgb=inverted))))
    assert recoloured["lost_objects"] == 1 and recoloured["relative_distance"] == pytest.approx(1.0)


def test_an_unknown_family_is_refused():
    with pytest.raises(ValueError, match="scenes, drawn"):
        make_cases(2, family="photos")


def test_aggregate_counts_lost_objects_and_splits_by_kind():
    from dragwidget.toy.shapes_bench import aggregate

    cases = make_cases(30, seed=5)
    assert {c.kind for c in cases} == {"one", "two_objects", "two_handles"}
    assert all(len(c.moves) == 2 for c in cases if c.kind == "two_objects")
    assert all(len(c.pairs) == 2 and len(c.moves) == 1 for c in cases if c.kind == "two_handles")
    # a perfect result for single-pair cases, no edit for the others
    rows = [{"kind": c.kind, **score(c, render(c.expected_scene) if c.kind == "one" else c.image)} for c in cases]
    summary = aggregate(rows)
    assert summary["dragged_objects"] == sum(len(c.moves) for c in cases)
    assert summary["lost_objects"] == 0
    assert summary["by_kind"]["one"]["relative_distance"] < 0.15
    assert summary["by_kind"]["two_objects"]["relative_distance"] == pytest.approx(1.0, abs=0.1)
    assert summary["by_kind"]["one"]["cases"] == sum(c.kind == "one" for c in cases)
