"""FastDrag's warp (`dragwidget.fastdrag`) and the method beside the other two.

The warp's steps on hand-made latents, where every answer can be worked out on paper:
- nothing is written outside the editable region, and the latent there stays as it was;
- FastDrag's elastic field: the whole drag at the handle, (s - 1) / s of it along the ray, none at the circle;
- several pairs are combined with weights 1 / distance to their handles;
- the rigid core moves the whole drag, and the object's cells arrive together;
- holes are filled from written cells, never left empty;
- where two cells land on one, the handle's side wins (or FastDrag's first in raster order).
Then the method through the editor on the tiny model: no LoRA, no optimisation, a re-drag that is
warp + denoise + decode only, progress and cancel, an empty mask.
"""

import math

import numpy as np
import pytest
import torch

from dragwidget import DragConfig, DragEditor, DragRequest
from dragwidget.methods import fastdrag
from dragwidget.errors import DragCancelled
from dragwidget.mutual_self_attention import DenoisingStep, StoredSelfAttentionProcessor, controlled_layers
from unet_counting import UNetCalls

FASTDRAG = DragConfig(method="fastdrag")


def numbered_latent(height=12, width=12, channels=2):
    """A latent whose every cell holds its own raster index (and its negative): a moved cell is recognisable."""
    index = torch.arange(height * width, dtype=torch.float32).view(1, 1, height, width) + 1
    return torch.cat([index, -index] + [index * (c + 2) for c in range(channels - 2)], dim=1)


def region_box(height, width, x0, y0, x1, y1):
    region = np.zeros((height, width), dtype=bool)
    region[y0:y1 + 1, x0:x1 + 1] = True
    return region


def test_nothing_moves_outside_the_editable_region():
    latent = numbered_latent(16, 16)
    editable = region_box(16, 16, 3, 3, 10, 8)
    outcome = fastdrag.warp(latent, torch.tensor([[5.0, 5.0]]), torch.tensor([[12.0, 5.0]]), FASTDRAG, editable)
    outside = ~torch.from_numpy(editable)
    assert torch.equal(outcome.latent[..., outside], latent[..., outside])
    assert torch.equal(outcome.region, torch.from_numpy(editable))
    assert (outcome.moves[outside] == 0).all()
    # every value inside came from a cell of the region (moved) or was filled from neighbours
    inside_values = set(outcome.latent[0, 0][torch.from_numpy(editable) & ~outcome.holes].tolist())
    region_values = set(latent[0, 0][torch.from_numpy(editable)].tolist())
    assert inside_values <= region_values
    # the target (12, 5) lies outside the region: the handle's cell cannot be written there
    assert outcome.latent[0, 0, 5, 12] == latent[0, 0, 5, 12]


def test_the_elastic_field_is_fastdrags():
    region = torch.from_numpy(region_box(21, 21, 0, 0, 20, 20))
    handle, target = torch.tensor([[10.0, 10.0]]), torch.tensor([[13.0, 10.0]])
    moves, share = fastdrag.warp_field(region, handle, target)
    centre, radius = (10.0, 10.0), math.hypot(10, 10)      # the box's centre and the distance to its corner
    assert moves[10, 10].tolist() == pytest.approx([3.0, 0.0])       # the whole drag at the handle
    # a cell 4 right of the handle: the ray from the handle leaves the circle at |AP| = R (the handle is
    # the centre), so the cell moves (R - 4) / R of the drag
    assert share[10, 14].item() == pytest.approx((radius - 4) / radius, abs=1e-5)
    assert moves[10, 14].tolist() == pytest.approx([3 * (radius - 4) / radius, 0.0], abs=1e-5)
    # a corner lies on the circle: it stays
    assert moves[0, 0].tolist() == pytest.approx([0.0, 0.0], abs=1e-5)
    # off-centre handle: solve the ray by hand for one cell
    handle = torch.tensor([[6.0, 8.0]])
    moves, share = fastdrag.warp_field(region, handle, handle + torch.tensor([[2.0, 1.0]]))
    a, c = np.array([6.0, 8.0]), np.array([9.0, 12.0])
    direction = (c - a) / np.linalg.norm(c - a)
    offset = a - np.array(centre)
    along = -offset @ direction + math.sqrt((offset @ direction) ** 2 - offset @ offset + radius ** 2)   # |AP|
    expected = (along - np.linalg.norm(c - a)) / along
    assert share[12, 9].item() == pytest.approx(expected, abs=1e-5)
    assert moves[12, 9].tolist() == pytest.approx([2 * expected, expected], abs=1e-5)


def test_pairs_are_combined_with_weights_one_over_distance():
    region = torch.from_numpy(region_box(21, 21, 0, 0, 20, 20))
    handles = torch.tensor([[5.0, 10.0], [15.0, 10.0]])
    targets = torch.tensor([[5.0, 7.0], [17.0, 10.0]])
    moves, _ = fastdrag.warp_field(region, handles, targets)
    each = [fastdrag.warp_field(region, h[None], t[None])[0] for h, t in zip(handles, targets)]
    cell = (12, 8)      # x, y: 7.3 cells from the first handle, 3.6 from the second
    distances = [math.dist(cell, h.tolist()) for h in handles]
    weights = np.array([1 / d for d in distances])
    weights /= weights.sum()
    expected = sum(w * m[cell[1], cell[0]] for w, m in zip(weights, each))
    assert moves[cell[1], cell[0]].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    # at a handle, its own pair alone
    assert moves[10, 5].tolist() == pytest.approx([0.0, -3.0], abs=1e-4)
    assert moves[10, 15].tolist() == pytest.approx([2.0, 0.0], abs=1e-4)


def square_features(height, width, box):
    """Two-channel features: one direction on the square `box` (x0, y0, x1, y1), another elsewhere."""
    features = torch.zeros(1, 2, height, width)
    features[0, 1] = 1.0
    x0, y0, x1, y1 = box
    features[0, :, y0:y1 + 1, x0:x1 + 1] = torch.tensor([1.0, 0.0])[:, None, None]
    return features


@pytest.mark.parametrize("drag, shift", [(6.0, 6), (5.5, 6), (4.5, 5)])
def test_the_rigid_core_moves_the_whole_object_by_the_whole_drag(drag, shift):
    latent = numbered_latent(20, 20)
    editable = region_box(20, 20, 1, 1, 18, 18)
    box = (4, 8, 7, 11)                                     # a 4x4 object, grabbed at its centre
    features = square_features(20, 20, box)
    handle, target = torch.tensor([[5.5, 9.5]]), torch.tensor([[5.5 + drag, 9.5]])
    rigid = fastdrag.warp(latent, handle, target, FASTDRAG, editable, features)
    x0, y0, x1, y1 = box
    assert rigid.cores[0].sum() == 16 and rigid.cores[0, y0:y1 + 1, x0:x1 + 1].all()
    # every cell of the object arrived the drag (half cells rounded up) to the right, unchanged and
    # in one piece: rounding half to even would send its columns to every other column
    assert torch.equal(rigid.latent[..., y0:y1 + 1, x0 + shift:x1 + shift + 1], latent[..., y0:y1 + 1, x0:x1 + 1])
    if drag != 6.0:
        return
    # without the core (FastDrag's elastic field) the object's far side lags behind: it stretches
    elastic = fastdrag.warp(latent, handle, target, FASTDRAG.replace(fastdrag_rigid_core=False), editable, features)
    assert not elastic.cores.any()
    assert not torch.equal(elastic.latent[..., y0:y1 + 1, x0 + 6:x1 + 7], latent[..., y0:y1 + 1, x0:x1 + 1])
    assert elastic.moves[9, x0, 0] < 5.0 < rigid.moves[9, x0, 0]


def test_the_core_is_the_grabbed_object_not_a_look_alike():
    features = square_features(20, 20, (2, 2, 5, 5))
    features[0, :, 12:16, 12:16] = torch.tensor([1.0, 0.0])[:, None, None]     # the same look, elsewhere
    region = torch.ones(20, 20, dtype=torch.bool)
    cores = fastdrag.object_cores(features, torch.tensor([[3.0, 3.0]]), region, 0.6)
    assert cores[0, 2:6, 2:6].all() and not cores[0, 12:16, 12:16].any()


def test_holes_are_filled_from_written_cells():
    latent = numbered_latent(16, 16)
    editable = region_box(16, 16, 2, 2, 13, 13)
    outcome = fastdrag.warp(latent, torch.tensor([[6.0, 7.0]]), torch.tensor([[10.0, 7.0]]),
                            FASTDRAG.replace(fastdrag_rigid_core=False), editable)
    assert outcome.holes.any()                       # the stretch leaves cells nothing landed on
    values = outcome.latent[0, 0]
    assert torch.isfinite(values).all() and (values[outcome.holes] != 0).all()
    # a hole takes its four nearest written neighbours, weighted 1 / distance
    moved, holes, _ = fastdrag.move_cells(latent, outcome.region, outcome.moves,
                                       fastdrag.warp_field(outcome.region, torch.tensor([[6.0, 7.0]]),
                                                           torch.tensor([[10.0, 7.0]]))[1], True)
    assert torch.equal(holes, outcome.holes) and (moved[..., holes] == 0).all()   # cleared before the fill
    y, x = [int(v) for v in holes.nonzero()[0]]
    expected, total = 0.0, 0.0
    for dy, dx in ((0, -1), (0, 1), (-1, 0), (1, 0)):
        step = 1
        while 0 <= y + dy * step < 16 and 0 <= x + dx * step < 16 and holes[y + dy * step, x + dx * step]:
            step += 1
        if 0 <= y + dy * step < 16 and 0 <= x + dx * step < 16:
            expected += moved[0, 0, y + dy * step, x + dx * step].item() / step
            total += 1 / step
    assert values[y, x].item() == pytest.approx(expected / total, rel=1e-5)


def test_what_the_moved_object_uncovers_is_filled_with_background_not_the_object():
    latent = torch.ones(1, 4, 20, 20)
    x0, y0, x1, y1 = box = (4, 8, 7, 11)
    latent[..., y0:y1 + 1, x0:x1 + 1] = 5.0
    editable = region_box(20, 20, 1, 1, 18, 18)
    outcome = fastdrag.warp(latent, torch.tensor([[5.5, 9.5]]), torch.tensor([[8.5, 9.5]]), FASTDRAG, editable,
                            square_features(20, 20, box))
    assert (outcome.latent[..., y0:y1 + 1, x0 + 3:x1 + 4] == 5.0).all()       # the object, 3 cells right
    uncovered = outcome.latent[..., y0:y1 + 1, x0:x0 + 3]
    # background that followed, or holes filled past the object: background either way
    assert outcome.holes[y0:y1 + 1, x0:x0 + 3].any() and torch.allclose(uncovered, torch.ones_like(uncovered))


def test_where_two_cells_land_on_one_the_handle_side_wins():
    latent = numbered_latent(1, 6)
    region = torch.ones(1, 6, dtype=torch.bool)
    moves = torch.zeros(1, 6, 2)
    moves[0, 1, 0], moves[0, 3, 0] = 2.0, 0.0       # cell 1 lands on cell 3, which stays
    share = torch.tensor([[0.0, 1.0, 0.0, 0.2, 0.0, 0.0]])
    handle_side, *_ = fastdrag.move_cells(latent, region, moves, share, handle_side_wins=True)
    raster, *_ = fastdrag.move_cells(latent, region, moves, share, handle_side_wins=False)
    assert handle_side[0, 0, 0, 3] == latent[0, 0, 0, 1]     # the cell that moved its whole drag
    assert raster[0, 0, 0, 3] == latent[0, 0, 0, 1]          # FastDrag: the first in raster order
    moves[0, 1, 0], moves[0, 5, 0] = 0.0, -2.0               # now the later cell (5) moves the whole drag
    share = torch.tensor([[0.0, 0.0, 0.0, 0.2, 0.0, 1.0]])
    handle_side, *_ = fastdrag.move_cells(latent, region, moves, share, handle_side_wins=True)
    raster, *_ = fastdrag.move_cells(latent, region, moves, share, handle_side_wins=False)
    assert handle_side[0, 0, 0, 3] == latent[0, 0, 0, 5] and raster[0, 0, 0, 3] == latent[0, 0, 0, 3]


def test_without_a_mask_the_region_surrounds_the_pairs():
    handles, targets = torch.tensor([[4.0, 5.0]]), torch.tensor([[7.0, 5.0]])
    region = fastdrag.editable_region(None, (16, 16), handles, targets)
    rows, columns = region.nonzero(as_tuple=True)
    assert (columns.min(), columns.max(), rows.min(), rows.max()) == (1, 10, 2, 8)   # grown by the 3-cell drag


PAIR = [((20, 30), (36, 30))]


@pytest.fixture
def fastdrag_editor(tiny_model, small_config, tmp_path):
    return DragEditor(tiny_model, config=small_config.replace(method="fastdrag"), cache_dir=tmp_path)


def test_fastdrag_edits_without_lora_or_optimisation_and_a_redrag_is_warp_denoise_decode(fastdrag_editor, make_image):
    events = []
    image = make_image(64, 64, seed=5)
    mask = np.zeros((64, 64), dtype=bool)
    mask[16:48, 10:50] = True
    counter = UNetCalls(fastdrag_editor.model.unet)
    result = fastdrag_editor.run(DragRequest(image, PAIR, mask, "a red disc"), progress=events.append)
    first = counter.take()
    config = result.config
    assert config.method == "fastdrag" and config.lora_steps == 0 and config.num_inference_steps == 10
    assert result.reused["lora"] == "none" and result.steps == 0
    assert {"warp", "denoise", "decode", "verdict"} <= set(result.timings)
    assert {e.stage for e in events} >= {"inversion", "drag", "denoise", "decode", "verdict"}
    assert not any(e.stage == "lora" and not e.cached for e in events)
    assert not any(grad for grad, _ in first)                            # no UNet pass with gradients
    assert result.handles[0] == pytest.approx(PAIR[0][1], abs=4.0)       # the warp sent the handle to its target
    # outside the mask the picture is the decode of the original branch: with keep_outside_mask the original itself
    kept = fastdrag_editor.run(DragRequest(image, PAIR, mask, "a red disc",
                                           config.replace(keep_outside_mask=True)))
    assert np.array_equal(np.asarray(kept.image)[~mask], np.asarray(image)[~mask])

    # the same request again: the prepared image is reused, no inversion; 7 denoising passes of the edit
    # alone (the original's keys and values come from the inversion's recording) + the verdict
    counter.take()
    again = fastdrag_editor.run(DragRequest(image, [((20, 30), (20, 44))], mask, "a red disc"))
    calls = counter.take()
    counter.handle.remove()
    assert again.reused == {"lora": "memory", "inversion": "memory"}
    denoising = [(False, 1)] * config.inversion_steps
    assert calls[:len(denoising)] == denoising
    assert calls[len(denoising):] == [(False, config.verdict_ensemble)] * again.verdict.unet_passes


def test_the_originals_locating_features_are_computed_once_and_outlive_the_feature_maps(fastdrag_editor, make_image):
    from dragwidget.feature_maps import FeatureRequest

    image = make_image(64, 64, seed=5)
    counter = UNetCalls(fastdrag_editor.model.unet)
    result = fastdrag_editor.run(DragRequest(image, PAIR, prompt="a red disc"))
    prepared = fastdrag_editor.prepared_for(image, "a red disc", result.config)
    ensemble = result.config.verdict_ensemble
    locating = prepared.original_features.locating[ensemble]
    # the rigid core's and the verdict's features of the original came from one UNet pass of the ensemble
    assert counter.take().count((False, ensemble)) == 2 and result.verdict.unet_passes == 1
    for steps in ([2], [3], [4], [5], [2, 3]):          # more feature-map requests than the maps keep
        fastdrag_editor.feature_maps(FeatureRequest(prepared=prepared, steps=steps, blocks=[2]))
    assert len(prepared.original_features.maps) == 4
    assert prepared.original_features.locating[ensemble] is locating
    counter.take()
    fastdrag_editor.run(DragRequest(image, [((20, 30), (20, 44))], prompt="a red disc"))
    assert counter.take().count((False, ensemble)) == 1       # the result's features alone
    counter.handle.remove()


def test_fastdrag_is_deterministic_and_an_empty_mask_is_not_an_error(fastdrag_editor, make_image):
    image = make_image(64, 64, seed=6)
    first = fastdrag_editor.run(DragRequest(image, PAIR, None, "a red disc"))
    second = fastdrag_editor.run(DragRequest(image, PAIR, np.zeros((64, 64), dtype=bool), "a red disc"))
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))


def test_fastdrag_can_be_cancelled_and_loses_nothing(fastdrag_editor, make_image):
    events = []
    request = DragRequest(make_image(64, 64, seed=7), PAIR, prompt="a red disc")
    with pytest.raises(DragCancelled):
        fastdrag_editor.run(request, progress=events.append, cancel=lambda: any(e.stage == "denoise" for e in events))
    assert fastdrag_editor.run(request).config.method == "fastdrag"


def test_each_method_prepares_with_its_own_settings():
    paper, good, fast = (DragConfig(method=m).for_method() for m in ("dragdiffusion", "gooddrag", "fastdrag"))
    assert (paper.inversion_steps, paper.lora_steps, paper.lora_augment) == (35, 80, True)
    assert (good.inversion_steps, good.lora_steps, good.lora_augment, good.gooddrag_round_loss) == (38, 70, False, 0)
    assert (fast.num_inference_steps, fast.inversion_steps, fast.lora_steps, fast.guidance_scale) == (10, 7, 0, 1.0)
    # today's GoodDrag settings, given explicitly, prepare as the paper's method does
    today = DragConfig(method="gooddrag", gooddrag_inversion_strength=0.7, gooddrag_lora_steps=80,
                       gooddrag_lora_augment=True, gooddrag_round_loss=4.0).for_method()
    assert (today.inversion_steps, today.lora_steps, today.lora_augment) == (35, 80, True)


def test_the_edit_is_denoised_alone_reading_the_keys_and_values_its_inversion_recorded(tiny_model, small_config,
                                                                                       tmp_path, make_image):
    editor = DragEditor(tiny_model, config=small_config.replace(method="fastdrag"), cache_dir=tmp_path)
    counter = UNetCalls(tiny_model.unet)
    result = editor.run(DragRequest(make_image(64, 64, seed=8), PAIR, prompt="a red disc"))
    calls = counter.take(with_timesteps=True)
    counter.handle.remove()
    steps = result.config.inversion_steps
    # the inversion, the original's features that find the handle's object, the denoising
    inversion, features, denoising = calls[:steps], calls[steps], calls[steps + 1:2 * steps + 1]
    assert features[1] == result.config.verdict_ensemble
    assert all(rows == 1 for _, rows, _ in inversion + denoising)
    # the denoising runs down the timesteps the inversion ran up: step i reads the recording's last but i
    assert [t for *_, t in denoising] == [t for *_, t in inversion][::-1]
    (prepared,) = editor._prepared.values()
    record = prepared.recorded[(result.config.num_inference_steps, steps)]
    assert len(record.levels) == steps and all(len(inputs) == steps for inputs in record.attention.values())
    assert set(record.attention) == set(controlled_layers(tiny_model.unet, result.config))


def test_stored_attention_gives_each_denoising_step_the_recording_of_its_timestep():
    seen = []
    record = [torch.full((1, 3, 2), float(i)) for i in range(4)]     # recorded at inversion steps 0..3
    step = DenoisingStep()
    processor = StoredSelfAttentionProcessor(lambda attn, hidden, keys, *rest: seen.append(keys), record, step, 1)
    hidden = torch.zeros(2, 3, 2)
    for index in range(4):
        step.index = index
        processor(None, hidden)
    assert seen[0] is None                                           # before start_step: the layer's own
    assert [keys[0, 0, 0].item() for keys in seen[1:]] == [2.0, 1.0, 0.0]
    assert all(keys.shape == hidden.shape for keys in seen[1:])      # every row of the batch reads it


def test_fastdrag_previews_its_denoising_for_the_gif(fastdrag_editor, make_image):
    events = []
    config = fastdrag_editor.config.replace(preview_every=3)
    fastdrag_editor.run(DragRequest(make_image(64, 64, seed=9), PAIR, prompt="a red disc", config=config),
                        progress=events.append)
    frames = [e for e in events if e.preview is not None]
    steps = config.for_method().inversion_steps
    assert [e.step for e in frames] == [s for s in range(1, steps + 1) if s % 3 == 0 or s == steps]
    assert all(e.stage == "denoise" and e.preview.size == (64, 64) and e.handles for e in frames)
    quiet = []
    fastdrag_editor.run(DragRequest(make_image(64, 64, seed=9), PAIR, prompt="a red disc"), progress=quiet.append)
    assert not any(e.preview is not None for e in quiet)       # no previews asked for, no decodes
