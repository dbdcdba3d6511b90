"""GoodDrag beside the paper's method: its own steps, on the tiny model.

- the paper's method is untouched by the second one (its settings and code path);
- GoodDrag's supervision target is the original's feature at the initial handle;
- it alternates: drag passes at each of its denoising steps, a DDIM step between them;
- a late host gives the same drag as an on-time one (the GPU's no-sync loop);
- `method` is one setting like every other.
"""

import functools
from unittest import mock

import numpy as np
import pytest
import torch

from dragwidget import DragConfig, DragEditor, DragRequest
from dragwidget import motion_supervision
from dragwidget.ddim_inversion import ddim_scheduler, drag_timestep_index
from dragwidget.denoise_decode import decode, denoise
from dragwidget.encoding import tensor_to_image
from dragwidget.errors import InputError
from dragwidget.feature_grid import FeatureGrid, grid_shape
from dragwidget.host_readback import HostReadback
from dragwidget.methods import gooddrag
from dragwidget.methods.common import DragInputs
from dragwidget.methods.dragdiffusion import optimize_latent
from unet_counting import UNetCalls

GOODDRAG = dict(method="gooddrag", gooddrag_denoising_steps=3, gooddrag_rounds=2, gooddrag_steps_per_round=2,
                gooddrag_motion_radius=1, gooddrag_tracking_radius=2, gooddrag_step_length=2.0,
                gooddrag_round_loss=0.0, gooddrag_stall_rounds=50)
PAIR = [((20, 30), (44, 30))]


@pytest.fixture
def prepared(editor, make_image):
    return editor.prepare(make_image(64, 64, seed=3), "a red disc")


def test_the_papers_method_is_the_papers_steps_whatever_the_gooddrag_settings(editor, prepared, small_config):
    config = small_config.replace(method="dragdiffusion", mutual_attention=True)
    result = editor.drag(prepared, PAIR, config=config)
    other = editor.drag(prepared, PAIR, config=config.replace(**{k: v for k, v in GOODDRAG.items() if k != "method"},
                                                               gooddrag_lr=0.5, gooddrag_mask_weight=7.0))
    assert np.array_equal(np.asarray(result.image), np.asarray(other.image))
    assert result.trajectory == other.trajectory and result.steps == other.steps

    # ... and the same picture as the paper's steps called one by one
    model = editor.model
    editor.use_prepared(prepared)
    scheduler = ddim_scheduler(model, config)
    start = drag_timestep_index(config)
    latent = prepared.inverted[(config.num_inference_steps, config.inversion_steps)]
    grid = grid_shape(prepared.working_size, config.feature_scale)
    handle, target = (torch.tensor([v * grid[1] / 64 for v in point]) for point in PAIR[0])
    torch.manual_seed(config.seed)
    with editor.holding_model():
        outcome = optimize_latent(DragInputs(model, latent, scheduler, start, prepared.text_embedding,
                                             handle.round()[None], target.round()[None],
                                             FeatureGrid(prepared.size, grid), config))
        edited = denoise(model, scheduler, start, latent, outcome.latent, prepared.text_embedding, config)
        by_hand = tensor_to_image(decode(model, edited)).resize(prepared.size)
    assert np.array_equal(np.asarray(by_hand), np.asarray(result.image))


def test_supervision_pulls_the_originals_feature_at_the_initial_handle():
    features = torch.randn(1, 8, 16, 16)
    reference = torch.randn(1, 8, 16, 16)      # the original's features: different from the current ones
    initial, handle, target = torch.tensor([5.0, 5.0]), torch.tensor([7.0, 5.0]), torch.tensor([12.0, 5.0])
    offsets = motion_supervision.patch_offsets(1, "cpu")
    ahead = motion_supervision.sample_features(features, handle + offsets + torch.tensor([2.0, 0.0]))
    loss = motion_supervision.motion_supervision_loss(features, handle[None], target[None], 1, 0.5, reference=reference,
                                                      reference_handles=initial[None], step_length=2.0)
    expected = 9 * torch.nn.functional.l1_loss(ahead, motion_supervision.sample_features(reference, initial + offsets))
    current = 9 * torch.nn.functional.l1_loss(ahead, motion_supervision.sample_features(features, handle + offsets))
    assert torch.allclose(loss, expected) and not torch.allclose(loss, current)


def test_gooddrag_supervises_with_the_original_trajectorys_features(editor, prepared, small_config, monkeypatch):
    seen, unet_features = [], []
    real_loss = motion_supervision.motion_supervision_loss

    def spy(features, handles, targets, radius, reach, reference=None, reference_handles=None, step_length=None):
        seen.append((reference, [h.clone() for h in reference_handles] if reference_handles is not None else None))
        return real_loss(features, handles, targets, radius, reach, reference, reference_handles, step_length)

    real_prediction = gooddrag.guided_prediction

    def record(model, latent, *args, **kwargs):
        noise, features = real_prediction(model, latent, *args, **kwargs)
        unet_features.append((latent.requires_grad, features.detach()))
        return noise, features

    monkeypatch.setattr(gooddrag, "motion_supervision_loss", spy)
    monkeypatch.setattr(gooddrag, "guided_prediction", record)
    editor.drag(prepared, PAIR, config=small_config.replace(**GOODDRAG))
    assert seen
    originals = [features for needs_grad, features in unet_features if not needs_grad]
    initial = [h.round() for h in seen[0][1]]
    for reference, starts in seen:
        assert reference is not None and any(torch.equal(reference, o) for o in originals)
        assert all(torch.equal(s, i) for s, i in zip(starts, initial))   # always the initial handle
    assert len({id(reference) for reference, _ in seen}) == GOODDRAG["gooddrag_denoising_steps"]


def test_gooddrag_alternates_dragging_and_denoising(fresh_model, small_config, tmp_path, make_image):
    config = small_config.replace(**GOODDRAG, gooddrag_lora_steps=0, reach_threshold=0.01)
    editor = DragEditor(fresh_model, config=config, cache_dir=tmp_path)
    prepared = editor.prepare(make_image(64, 64, seed=3), "a red disc")
    counter = UNetCalls(fresh_model.unet)
    result = editor.drag(prepared, PAIR)
    counter.handle.remove()
    scheduler = ddim_scheduler(fresh_model, config)
    start = drag_timestep_index(config)
    timesteps = scheduler.timesteps.tolist()
    expected = []
    for t in timesteps[start:start + config.gooddrag_denoising_steps]:
        # the original's pass, every round's Adam steps, then one pass for the DDIM step
        passes = config.gooddrag_rounds * config.gooddrag_steps_per_round
        expected += [(False, 1, t)] + [(True, 1, t)] * passes + [(False, 1, t)]
    # the rest: original and edited together, with mutual self-attention
    expected += [(False, 2, t) for t in timesteps[start + config.gooddrag_denoising_steps:]]
    calls = counter.take(with_timesteps=True)
    assert calls[:len(expected)] == expected
    verdict = [(False, config.verdict_ensemble, 261)] * result.verdict.unet_passes   # the verdict comes last
    assert calls[len(expected):] == verdict
    assert result.steps == config.gooddrag_denoising_steps * config.gooddrag_rounds * config.gooddrag_steps_per_round


def test_a_handle_that_arrives_ends_the_drag_and_denoising_goes_on(fresh_model, small_config, tmp_path, make_image,
                                                                   monkeypatch):
    config = small_config.replace(**GOODDRAG, gooddrag_lora_steps=0)
    editor = DragEditor(fresh_model, config=config, cache_dir=tmp_path)
    prepared = editor.prepare(make_image(64, 64, seed=3), "a red disc")
    # a tracker that finds every handle at its target at once
    monkeypatch.setattr(gooddrag, "track_points", lambda original, features, initial, handles, radius:
                        torch.tensor([[22.0, 15.0]]))
    counter = UNetCalls(fresh_model.unet)
    result = editor.drag(prepared, PAIR)
    counter.handle.remove()
    assert result.tracker_reached and result.steps == 0
    start = drag_timestep_index(config)
    timesteps = ddim_scheduler(fresh_model, config).timesteps.tolist()
    calls = counter.take(with_timesteps=True)
    assert calls[:3] == [(False, 1, timesteps[start]), (True, 1, timesteps[start]), (False, 1, timesteps[start])]
    rest = [(False, 2, t) for t in timesteps[start + 1:]]
    assert calls[3:3 + len(rest)] == rest


@pytest.mark.parametrize("round_loss", [0.0, 1e9], ids=["full_rounds", "rounds_end_after_one_step"])
def test_a_late_host_gives_the_same_gooddrag_as_an_on_time_one(editor, prepared, small_config, round_loss):
    config = small_config.replace(**{**GOODDRAG, "gooddrag_round_loss": round_loss}, preview_every=2, reach_threshold=1.5)
    model = editor.model
    editor.use_prepared(prepared)
    scheduler = ddim_scheduler(model, config)
    latent = prepared.inverted[(config.num_inference_steps, config.inversion_steps)]
    keep = torch.ones(1, 1, 32, 32)
    keep[..., 4:20, 4:28] = 0
    outcomes = []
    for lag in (0, 3):
        events = []
        torch.manual_seed(config.seed)
        late = functools.partial(HostReadback, lag=lag)   # held `lag` steps back: a host behind its GPU
        with editor.holding_model(), mock.patch.object(gooddrag, "HostReadback", late):
            outcome = gooddrag.drag_and_denoise(DragInputs(
                model, latent, scheduler, drag_timestep_index(config), prepared.text_embedding,
                torch.tensor([[10.0, 15.0]]), torch.tensor([[22.0, 15.0]]), FeatureGrid(prepared.size, (32, 32)),
                config, keep_mask=keep,
                on_step=lambda step, handles, clean: events.append(
                    (step, [h.tolist() for h in handles], None if clean is None else clean.clone()))))
        outcomes.append((outcome, events))
    (on_time, on_time_events), (late, late_events) = outcomes
    assert torch.equal(on_time.edited, late.edited) and torch.equal(on_time.original, late.original)
    assert (on_time.steps, on_time.trajectory, on_time.resume_index) == (late.steps, late.trajectory, late.resume_index)
    assert [(s, h) for s, h, _ in on_time_events] == [(s, h) for s, h, _ in late_events]
    previews = [(s, c) for s, _, c in on_time_events if c is not None]
    assert previews and all(torch.equal(c, dict((s, c) for s, _, c in late_events)[s]) for s, c in previews)
    if round_loss:   # every round ended after its first step
        assert on_time.steps <= config.gooddrag_denoising_steps * config.gooddrag_rounds


def test_method_is_a_setting_like_any_other(editor, prepared, small_config):
    assert DragConfig().method in ("dragdiffusion", "gooddrag", "fastdrag")
    with pytest.raises(InputError, match="method must be one of dragdiffusion, gooddrag, fastdrag, got 'good'"):
        small_config.replace(method="good")
    result = editor.drag(prepared, PAIR, config=small_config.replace(**GOODDRAG))
    assert result.config.method == "gooddrag" and result.report()["config"]["method"] == "gooddrag"
    assert result.timings["optimisation"] > 0 and result.timings["denoise"] > 0


def test_gooddrag_reports_progress_and_can_be_cancelled(editor, make_image, small_config):
    from dragwidget.errors import DragCancelled

    events = []
    request = DragRequest(make_image(64, 64, seed=4), PAIR, prompt="a red disc", config=small_config.replace(**GOODDRAG))
    with pytest.raises(DragCancelled):
        editor.run(request, progress=events.append,
                   cancel=lambda: sum(e.stage == "drag" for e in events) >= 3)
    drags = [e for e in events if e.stage == "drag"]
    assert len(drags) == 3 and all(e.handles for e in drags)
    result = editor.run(request)      # nothing was lost: the prepared image drags again
    assert result.config.method == "gooddrag"
