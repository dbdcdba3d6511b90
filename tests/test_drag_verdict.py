"""The verdict is read from the picture: it says what the result shows, whatever the tracker believed."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from dragwidget import DragEditor, DragRequest
from dragwidget.methods import dragdiffusion
from dragwidget.drag_verdict import appearance_error, judge
from dragwidget.locating import best_match
from dragwidget.points import normalise_points
from dragwidget.toy.shapes import OBJECT_COLORS, render
from dragwidget.toy.shapes_bench import make_cases


@pytest.fixture(scope="module")
def toy():
    return DragEditor("toy").model


@pytest.fixture(scope="module")
def cases():
    return [case for case in make_cases(12, seed=41) if case.kind == "one"][:4]


def verdict_on(toy, case, result: np.ndarray):
    original = Image.fromarray(case.image)
    config = DragEditor(toy).config
    return judge(toy, original, Image.fromarray(result), normalise_points(case.pairs, *original.size),
                 case.scene.caption, config)[0]


def test_an_object_at_its_target_is_reached_and_one_left_in_place_is_not_moved(toy, cases):
    for case in cases:
        moved = verdict_on(toy, case, render(case.expected_scene))   # the exact answer
        assert moved.reached, (case.name, moved.describe())
        assert moved.describe().startswith("reached, shape kept: the grabbed region is")
        unchanged = verdict_on(toy, case, case.image)
        assert not unchanged.reached and unchanged.describe().startswith("not moved"), (case.name, unchanged.describe())


GROUND, DISC = (70, 110, 190), (235, 200, 40)     # colours outside the toy's scene palette
CENTRE, RADIUS, DRAG = (22.0, 30.0), 9.0, (18.0, 4.0)


def drawn(*shapes) -> Image.Image:
    """A 64-px picture drawn here: ellipses (cx, cy, rx, ry), optionally cut by a vertical gap
    (the cells with |x - cx| < gap / 2 left as ground), on a plain ground."""
    ys, xs = np.mgrid[0:64, 0:64] + 0.5
    picture = np.empty((64, 64, 3), np.uint8)
    picture[:] = GROUND
    for cx, cy, rx, ry, gap in shapes:
        inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
        picture[inside & (np.abs(xs - cx) >= gap / 2)] = DISC
    return Image.fromarray(picture)


def judged(toy, result: Image.Image):
    original = drawn((*CENTRE, RADIUS, RADIUS, 0))
    handle = (CENTRE[0] - 3, CENTRE[1] + 2)            # not the centre: the user grabs the object somewhere
    pairs = normalise_points([(handle, (handle[0] + DRAG[0], handle[1] + DRAG[1]))], 64, 64)
    (pair,) = judge(toy, original, result, pairs, "a yellow disc", DragEditor(toy).config)[0].pairs
    return pair


def test_each_category_on_pictures_whose_truth_is_known_by_construction(toy):
    tx, ty = CENTRE[0] + DRAG[0], CENTRE[1] + DRAG[1]
    truths = {
        "reached, shape kept": drawn((tx, ty, RADIUS, RADIUS, 0)),                   # the original shifted exactly
        "reached, but deformed": drawn((tx, ty, RADIUS / 2, RADIUS / 2, 0)),        # shifted, squashed to half
        "split": drawn((tx, ty, RADIUS, RADIUS, 8)),                                  # shifted, split in two pieces
        "not moved": drawn((*CENTRE, RADIUS, RADIUS, 0)),
        "lost": drawn(),                                                              # erased
    }
    said = {truth: judged(toy, picture) for truth, picture in truths.items()}
    assert said["reached, shape kept"].reached
    assert said["reached, shape kept"].region.arrived_share >= 0.9 and said["reached, shape kept"].region_distance <= 2
    squashed = said["reached, but deformed"]
    assert squashed.category == "reached, but deformed" and not squashed.reached
    assert squashed.describe().startswith("reached, but deformed: ") and "% of the region arrived" in squashed.describe()
    assert squashed.region.arrived_share < said["reached, shape kept"].region.arrived_share - 0.3
    split = said["split"]
    assert split.category == "reached, but deformed" and split.region.arrived_share < 0.7
    assert said["not moved"].category == "not moved" and said["not moved"].region.offset == pytest.approx((0, 0), abs=0.5)
    assert said["lost"].category == "lost" and said["lost"].describe().startswith("lost: ")


def test_an_object_moved_part_of_the_way_says_how_far(toy):
    tx, ty = CENTRE[0] + DRAG[0] / 2, CENTRE[1] + DRAG[1] / 2
    pair = judged(toy, drawn((tx, ty, RADIUS, RADIUS, 0)))
    assert pair.category == "moved part of the way" and not pair.reached
    assert 0.35 <= pair.progress <= 0.65 and pair.describe().startswith(f"moved part of the way ({100 * pair.progress:.0f} %)")


def test_an_object_that_arrives_in_another_colour_is_lost(toy, cases):
    for case in cases:
        index = next(iter(case.moves))
        scene = case.expected_scene
        obj = scene.objects[index]
        farthest = max(OBJECT_COLORS, key=lambda name: np.linalg.norm(np.subtract(OBJECT_COLORS[name], obj.rgb)))
        recoloured = scene.with_object(index, dataclasses.replace(obj, color=farthest))
        verdict = verdict_on(toy, case, render(recoloured))
        assert not verdict.reached and verdict.describe().startswith("lost"), (case.name, verdict.describe())


def test_best_match_and_appearance_error_on_known_maps():
    source = torch.zeros(1, 3, 8, 8)
    source[0, :, 2, 3] = torch.tensor([1.0, 0.0, 0.0])
    result = torch.full((1, 3, 8, 8), 0.1)
    result[0, :, 5, 6] = torch.tensor([1.0, 0.0, 0.0])
    assert best_match(source[0], result[0], (3, 2)).best == (6, 5)
    picture = np.zeros((8, 8, 3), dtype=np.uint8)
    picture[1:4, 2:5] = 200
    shifted = np.roll(picture, (3, 3), axis=(0, 1))
    assert appearance_error(picture, shifted, (3, 2), (6, 5), 1) == 0.0
    assert appearance_error(picture, shifted, (3, 2), (3, 2), 1) == 200.0


def test_the_result_says_what_the_picture_shows_not_what_the_tracker_believed(editor, make_image, monkeypatch):
    # a tracker fooled into seeing every handle at its target after the first step
    monkeypatch.setattr(dragdiffusion, "track_points",
                        lambda initial, features, start, handles, radius: torch.tensor([[22.0, 15.0]]))
    result = editor.run(DragRequest(make_image(64, 64, seed=6), [((20, 30), (44, 30))], prompt="a red disc"))
    assert result.tracker_reached and result.steps == 1
    assert not result.reached and "24.0 px from the target" in result.says   # the content stayed at the handle
    report = result.report()
    assert report["reached"] is False and report["tracker_reached"] is True
    assert report["verdict"]["pairs"][0]["distance"] > 0.7 * report["verdict"]["pairs"][0]["drag_length"]


def test_content_is_located_on_a_bounded_grid_and_found_in_image_pixels(tiny_model):
    from dragwidget.locating import content_features

    picture = Image.fromarray((np.random.default_rng(0).random((256, 512, 3)) * 255).astype(np.uint8))
    config = DragEditor(tiny_model).config
    passes = []
    hook = tiny_model.unet.register_forward_hook(lambda module, inputs, output: passes.append(inputs[0].shape))
    try:
        features = content_features(tiny_model, picture, "", config.replace(verdict_ensemble=1))
    finally:
        hook.remove()
    assert features.shape[-2:] == (64, 128)        # not 256x512 maps of every channel
    # the UNet saw the picture at the drag's working size (the model's own width), not at 512 px
    working = (tiny_model.native_width, tiny_model.native_width // 2)
    assert [tuple(shape[-2:]) for shape in passes] == [(working[1] // tiny_model.vae_scale_factor,
                                                       working[0] // tiny_model.vae_scale_factor)]
    verdict, _ = judge(tiny_model, picture, picture, normalise_points([((100, 60), (300, 60))], 512, 256), "", config)
    (pair,) = verdict.pairs
    # an unchanged picture: its content is where it was, to the grid's 4-px steps
    assert abs(pair.found[0] - 100) <= 4 and abs(pair.found[1] - 60) <= 4 and pair.category == "not moved"
    assert pair.region.offset == pytest.approx((0.0, 0.0), abs=0.5) and pair.region_distance == pytest.approx(200, abs=1)
