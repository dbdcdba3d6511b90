"""The UNet work of each stage, counted on the tiny model: the structure the GPU fast path relies on.

LoRA: one forward (with gradients) per step; inversion: one forward per step; drag: one forward
with gradients per optimisation step (the first also gives the handles' reference features) plus
one without, which tracks the handles after the last step;
denoise: one forward of the original and edited rows together per step; the verdict: one pass of
its ensemble for the result (and one for the original, on an image's first drag); a re-drag of a
prepared image: no LoRA and no inversion. Every call is recorded with whether gradients were on and its
batch size, so that a stage that silently doubled its UNet work would fail here.
"""

import pytest

from dragwidget import DragEditor, DragRequest
from unet_counting import UNetCalls


@pytest.fixture
def counted(fresh_model, small_config, tmp_path):
    # a LoRA batch of 2 tells LoRA steps from drag steps by their batch; a tiny stop distance makes
    # every drag step run
    editor = DragEditor(fresh_model, config=small_config.replace(lora_steps=5, lora_batch_size=2, max_drag_steps=4,
                                                                 reach_threshold=0.01),
                        cache_dir=tmp_path)
    counter = UNetCalls(fresh_model.unet)
    yield editor, counter
    counter.handle.remove()


def test_each_stage_calls_the_unet_as_often_as_its_steps(counted, make_image):
    editor, counter = counted
    config = editor.config
    image = make_image(64, 64, seed=3)
    prepared = editor.prepare(image, "a red disc")
    prepare_calls = counter.take()
    lora = [call for call in prepare_calls if call[0]]
    inversion = [call for call in prepare_calls if not call[0]]
    assert lora == [(True, 2)] * config.lora_steps
    assert inversion == [(False, 1)] * config.inversion_steps

    result = editor.drag(prepared, [((20, 30), (44, 30))])
    drag_calls = counter.take()
    assert result.steps == config.max_drag_steps        # the target is far: every step ran
    # one forward with gradients per step, one without to track the handles after the last, then
    # denoising: original and edited rows in one batch (mutual self-attention), one call per step
    verdict = [(False, config.verdict_ensemble)] * 2      # the original's features, then the result's
    assert drag_calls == [(True, 1)] * result.steps + [(False, 1)] + [(False, 2)] * config.inversion_steps + verdict
    assert result.verdict.unet_passes == 2


def test_a_redrag_of_a_prepared_image_runs_no_lora_and_no_inversion(counted, make_image):
    editor, counter = counted
    image = make_image(64, 64, seed=4)
    editor.run(DragRequest(image, [((20, 30), (44, 30))], prompt="a red disc"))
    first = counter.take()
    editor.run(DragRequest(image, [((40, 20), (20, 40))], prompt="a red disc"))
    again = counter.take()
    config = editor.config
    drag_and_denoise = [(True, 1)] * config.max_drag_steps + [(False, 1)] + [(False, 2)] * config.inversion_steps
    verdict = (False, config.verdict_ensemble)
    assert len(first) == config.lora_steps + config.inversion_steps + len(drag_and_denoise) + 2
    assert again == drag_and_denoise + [verdict]     # the original's verdict features are kept with the image
