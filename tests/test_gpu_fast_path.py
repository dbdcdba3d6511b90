"""The GPU fast path's structure, proved where it can be without a GPU (issue 11).

- Point tracking searches every window at once on the device; it must find what a plain window
  scan finds, borders and ties included.
- On a GPU the host learns each drag step's handles a step or two late; steps queued after the
  handles arrived must change nothing. A `HostReadback` held some steps back makes the CPU late on
  purpose: a late host must give the very same drag as an on-time one.
- Half-precision UNet weights train a float32 LoRA.
- Every attention, the mutual self-attention included, runs through torch's fused SDPA.
- On CUDA (skipped elsewhere; the GPU run executes it): no step loop synchronises with the host
  per step, counted with torch.cuda.set_sync_debug_mode.
"""

import functools
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dragwidget import DragConfig, DragEditor, DragRequest, load_model
from dragwidget.ddim_inversion import ddim_scheduler, drag_timestep_index
from dragwidget.feature_grid import FeatureGrid, grid_shape
from dragwidget.host_readback import HostReadback
from dragwidget.methods import dragdiffusion
from dragwidget.methods.common import DragInputs
from dragwidget.methods.dragdiffusion import optimize_latent
from dragwidget.point_tracking import track_points


def window_scan(initial_features, features, start, current, radius):
    """The textbook search: visit the clipped window row by row, keep the first smallest L1 distance."""
    _, _, height, width = features.shape
    x0, y0 = (min(max(int(round(v)), 0), limit - 1) for v, limit in zip(start, (width, height)))
    reference = initial_features[0, :, y0, x0]
    best, found = None, None
    cx, cy = (int(round(v)) for v in current)
    for y in range(max(0, cy - radius), min(height, cy + radius + 1)):
        for x in range(max(0, cx - radius), min(width, cx + radius + 1)):
            distance = float((features[0, :, y, x] - reference).abs().sum())
            if best is None or distance < best:
                best, found = distance, (x, y)
    return found


def test_tracking_finds_what_a_window_scan_finds_at_borders_and_ties():
    generator = torch.Generator().manual_seed(0)
    initial = torch.randn(1, 6, 13, 17, generator=generator)
    after = torch.randn(1, 6, 13, 17, generator=generator)
    after[0, :, 2:5, 0:3] = initial[0, :, 3, 1, None, None]   # a block of exact ties at the border
    starts = [(1.0, 3.0), (0.0, 0.0), (16.0, 12.0), (8.4, 6.6), (3.0, 12.0)]
    currents = [(1.0, 3.0), (-1.0, 1.0), (16.0, 12.0), (10.0, 5.0), (2.0, 11.0)]
    found = track_points(initial, after, torch.tensor(starts), torch.tensor(currents), radius=3)
    expected = [window_scan(initial, after, s, c, 3) for s, c in zip(starts, currents)]
    assert [tuple(int(v) for v in xy) for xy in found] == expected
    assert expected[0] == (0, 2)   # the tie block: the first in scan order wins


@pytest.fixture(scope="module")
def prepared_drag(tiny_model_dir, tmp_path_factory):
    model = load_model(tiny_model_dir, device="cpu")
    # the paper's optimisation, called directly below
    config = DragConfig(method="dragdiffusion", num_inference_steps=10, lora_steps=0, working_width=64,
                        max_drag_steps=12, reach_threshold=1.5, preview_every=2)
    editor = DragEditor(model, config=config, cache_dir=tmp_path_factory.mktemp("lag_cache"))
    picture = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    prepared = editor.prepare(picture, "a red disc")
    scheduler = ddim_scheduler(model, config)
    return model, config, prepared, scheduler


def drag(prepared_drag, handle, target, lag, keep_mask=None):
    model, config, prepared, scheduler = prepared_drag
    events = []
    with mock.patch.object(dragdiffusion, "HostReadback", functools.partial(HostReadback, lag=lag)):
        outcome = optimize_latent(DragInputs(
            model, prepared.inverted[(config.num_inference_steps, config.inversion_steps)], scheduler,
            drag_timestep_index(config), prepared.text_embedding, torch.tensor([handle]), torch.tensor([target]),
            FeatureGrid(prepared.size, grid_shape(prepared.working_size, config.feature_scale)), config,
            keep_mask=keep_mask,
            on_step=lambda step, handles, clean: events.append(
                (step, [h.tolist() for h in handles], None if clean is None else clean.clone()))))
    return outcome, events


@pytest.mark.parametrize("handle, target, arrives", [((16.0, 12.0), (20.0, 12.0), True), ((12.0, 10.0), (15.0, 10.0), False)],
                         ids=["arrives", "runs_out_of_steps"])
def test_a_late_host_gives_the_same_drag_as_an_on_time_one(prepared_drag, handle, target, arrives):
    _, config, _, _ = prepared_drag
    keep = torch.ones(1, 1, 32, 32)   # the tiny model's latent is 32x32 for a 64x64 image
    keep[..., 4:20, 4:28] = 0
    on_time, on_time_events = drag(prepared_drag, handle, target, lag=0, keep_mask=keep)
    late, late_events = drag(prepared_drag, handle, target, lag=3, keep_mask=keep)
    if arrives:
        # the case this test is about: the late host queues steps past the arrival
        assert on_time.reached and 0 < on_time.steps < config.max_drag_steps - 3
    else:
        assert not on_time.reached and on_time.steps == config.max_drag_steps
    assert torch.equal(late.latent, on_time.latent)
    assert (late.steps, late.reached, late.trajectory) == (on_time.steps, on_time.reached, on_time.trajectory)
    assert [h.tolist() for h in late.handles] == [h.tolist() for h in on_time.handles]
    assert [(s, h) for s, h, _ in late_events] == [(s, h) for s, h, _ in on_time_events]
    previews = [(s, latent) for s, _, latent in on_time_events if latent is not None]
    assert previews and all(torch.equal(latent, dict((s, l) for s, _, l in late_events)[s]) for s, latent in previews)


def test_a_half_precision_unet_trains_a_float32_lora(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir, device="cpu", dtype=torch.float16)
    assert model.unet.dtype == torch.float16 and model.autocast_enabled
    seen = set()

    def look(event):
        if event.stage == "lora" and not event.cached:
            seen.update((("lora" if "lora_" in name else "base"), parameter.dtype)
                        for name, parameter in model.unet.named_parameters())

    config = DragConfig().replace_for_method(num_inference_steps=10, lora_steps=3, lora_batch_size=1, working_width=64,
                                             max_drag_steps=2)
    picture = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    request = DragRequest(picture, [((20, 30), (40, 30))], prompt="a red disc")
    result = DragEditor(model, config=config, cache_dir=tmp_path).run(request, progress=look)
    assert seen == {("lora", torch.float32), ("base", torch.float16)}
    assert np.asarray(result.image).std() > 0
    # the cached (float32) LoRA installed into the half-precision UNet gives the same edit
    again = DragEditor(model, config=config, cache_dir=tmp_path).run(request)
    assert again.reused["lora"] == "disk cache"
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))


def test_every_attention_runs_through_sdpa_mutual_self_attention_included(fresh_model, small_config, tmp_path,
                                                                         monkeypatch, make_image):
    editor = DragEditor(fresh_model, config=small_config.replace(lora_steps=0), cache_dir=tmp_path)
    prepared = editor.prepare(make_image(64, 64, seed=5), "a red disc")
    unet_calls, inside = [], []
    fresh_model.unet.register_forward_pre_hook(lambda module, args: unet_calls.append(1) or inside.append(1))
    fresh_model.unet.register_forward_hook(lambda module, args, output: inside.clear())
    fused_calls = []   # inside the UNet: the VAE's attention is not what this test counts
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **k: (fused_calls.append(1) if inside else None) or sdpa(*a, **k))
    editor.drag(prepared, [((20, 30), (44, 30))])
    assert small_config.mutual_attention and unet_calls
    assert len(fused_calls) == len(fresh_model.unet.attn_processors) * len(unet_calls)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host synchronisation is a CUDA matter: the GPU run executes this")
def test_no_step_loop_synchronises_with_the_host_per_step(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir, device="cuda")
    picture = (np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[10:50, 10:60] = True

    drag = [((8, 30), (56, 30))]   # 24 grid pixels: tracking (3 per step at most) cannot arrive within 6 steps

    def synchronising_calls(steps):
        config = DragConfig().replace_for_method(num_inference_steps=2 * steps, inversion_strength=0.5, lora_steps=steps,
                                                 lora_batch_size=2, max_drag_steps=steps, reach_threshold=0.01,
                                                 working_width=64)
        editor = DragEditor(model, config=config, cache_dir=tmp_path / str(steps))
        editor.run(DragRequest(picture, drag, mask, "a red disc"))   # warm-up: one-off syncs
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = DragEditor(model, config=config, cache_dir=tmp_path / f"{steps}b").run(
                    DragRequest(picture, drag, mask, "a red disc"))
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert result.steps == steps
        return sum("synchroniz" in str(w.message) for w in caught)

    # twice the LoRA, inversion, drag and denoising steps, the same number of synchronisations
    assert synchronising_calls(3) == synchronising_calls(6)
