"""The verdict is read from the picture: it says what the result shows, whatever the tracker believed."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from dragwidget import DragEditor, DragRequest, latent_optimization
from dragwidget.drag_verdict import appearance_error, find_content, judge
from dragwidget.image_input import normalise_points
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
        assert "moved to" in moved.describe() and "appearance kept" in moved.describe()
        unchanged = verdict_on(toy, case, case.image)
        assert not unchanged.reached and unchanged.describe().startswith("not moved"), (case.name, unchanged.describe())


def test_an_object_that_arrives_in_another_colour_is_lost(toy, cases):
    for case in cases:
        index = next(iter(case.moves))
        scene = case.expected_scene
        obj = scene.objects[index]
        farthest = max(OBJECT_COLORS, key=lambda name: np.linalg.norm(np.subtract(OBJECT_COLORS[name], obj.rgb)))
        recoloured = scene.with_object(index, dataclasses.replace(obj, color=farthest))
        verdict = verdict_on(toy, case, render(recoloured))
        assert not verdict.reached and verdict.describe().startswith("lost"), (case.name, verdict.describe())


def test_find_content_and_appearance_error_on_known_maps():
    source = torch.zeros(1, 3, 8, 8)
    source[0, :, 2, 3] = torch.tensor([1.0, 0.0, 0.0])
    result = torch.full((1, 3, 8, 8), 0.1)
    result[0, :, 5, 6] = torch.tensor([1.0, 0.0, 0.0])
    assert find_content(source, result, (3, 2)) == (6.0, 5.0)
    picture = np.zeros((8, 8, 3), dtype=np.uint8)
    picture[1:4, 2:5] = 200
    shifted = np.roll(picture, (3, 3), axis=(0, 1))
    assert appearance_error(picture, shifted, (3, 2), (6, 5), 1) == 0.0
    assert appearance_error(picture, shifted, (3, 2), (3, 2), 1) == 200.0


def test_the_result_says_what_the_picture_shows_not_what_the_tracker_believed(editor, make_image, monkeypatch):
    # a tracker fooled into seeing every handle at its target after the first step
    monkeypatch.setattr(latent_optimization, "track_points",
                        lambda initial, features, start, handles, radius: [torch.tensor([22.0, 15.0])])
    result = editor.run(DragRequest(make_image(64, 64, seed=6), [((20, 30), (44, 30))], prompt="a red disc"))
    assert result.tracker_reached and result.steps == 1
    assert not result.reached and "24.0 px from the target" in result.says   # the content stayed at the handle
    report = result.report()
    assert report["reached"] is False and report["tracker_reached"] is True
    assert report["verdict"]["pairs"][0]["distance"] > 0.7 * report["verdict"]["pairs"][0]["drag_length"]


def test_content_is_located_on_a_bounded_grid_and_found_in_image_pixels(tiny_model):
    from dragwidget.drag_verdict import content_features

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
    assert abs(pair.found[0] - 100) <= 4 and abs(pair.found[1] - 60) <= 4 and not pair.moved
