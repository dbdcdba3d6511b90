"""DragEditor: reuse of prepared images, progress, masks, cancellation, odd sizes."""

import numpy as np
import pytest
from PIL import Image

from dragwidget import DragCancelled, DragEditor, DragRequest, InputError, load_model, lora_finetuning

POINTS = [{"handle": [10, 12], "target": [30, 20]}]


@pytest.fixture(scope="module")
def editor(tiny_model, small_config, tmp_path_factory):
    """This module's own editor on the shared model: the images it prepares (and keeps in memory)
    stay out of the way of other modules that look into the session editor."""
    return DragEditor(tiny_model, config=small_config, cache_dir=tmp_path_factory.mktemp("editor_module_cache"))


def pixels(result):
    return np.asarray(result.image)


def test_run_reuses_the_prepared_image_and_reports_progress(editor, make_image):
    picture = make_image(50, 37, seed=10)
    first_events, second_events = [], []
    first = editor.run(DragRequest(picture, POINTS, prompt="a red disc"), progress=first_events.append)
    second = editor.run(DragRequest(picture, POINTS, prompt="a red disc"), progress=second_events.append)

    assert first.reused == {"lora": "trained", "inversion": "computed"}
    assert second.reused == {"lora": "memory", "inversion": "memory"}
    assert second.timings["lora"] == 0.0 and second.timings["inversion"] == 0.0
    assert first.timings["lora"] > 0 and first.timings["inversion"] > 0
    # Nothing was trained or inverted the second time: the lora/inversion events are "cached".
    assert all(e.cached for e in second_events if e.stage in ("lora", "inversion"))
    assert {"lora", "inversion", "drag", "denoise", "decode"} <= {e.stage for e in first_events}
    assert {"drag", "denoise", "decode"} <= {e.stage for e in second_events}
    stages = [e.stage for e in first_events]
    assert stages.index("lora") < stages.index("inversion") < stages.index("drag") < stages.index("denoise")
    lora_steps = [e.step for e in first_events if e.stage == "lora"]
    assert lora_steps == [1, 2]
    # Same prepared image and seed: the same edit.
    assert np.array_equal(pixels(first), pixels(second))

    # The trajectory starts at the handle, in input pixels (grid 32x24 for 50x37: <= 0.79 px rounding).
    assert abs(first.trajectory[0][0][0] - 10) <= 0.79 and abs(first.trajectory[0][0][1] - 12) <= 0.78
    drag_events = [e for e in first_events if e.stage == "drag"]
    assert drag_events[0].step == 0 and drag_events[0].handles == first.trajectory[0]
    assert [e.handles for e in drag_events] == first.trajectory
    assert first.handles == first.trajectory[-1]
    assert first.image.size == (50, 37) and first.original.size == (50, 37)


def test_a_different_prompt_prepares_again(editor, make_image):
    picture = make_image(50, 37, seed=10)
    result = editor.run(DragRequest(picture, POINTS, prompt="a blue disc"))
    assert result.reused == {"lora": "trained", "inversion": "computed"}


def test_empty_mask_is_the_same_as_no_mask(editor, make_image):
    prepared = editor.prepare(make_image(48, 40, seed=11), "a red disc")
    unmasked = editor.drag(prepared, POINTS)
    empty = editor.drag(prepared, POINTS, mask=np.zeros((40, 48), dtype=np.uint8))
    assert empty.mask is None
    assert np.array_equal(pixels(empty), pixels(unmasked))
    # A real mask does change the edit (so the comparison above can tell the difference).
    half = np.zeros((40, 48), dtype=np.uint8)
    half[:, 24:] = 1
    masked = editor.drag(prepared, POINTS, mask=half)
    assert masked.mask is not None and masked.mask[:, 24:].all() and not masked.mask[:, :24].any()
    assert not np.array_equal(pixels(masked), pixels(unmasked))


def test_mask_of_another_size_is_resized_to_the_image(editor, make_image):
    prepared = editor.prepare(make_image(48, 40, seed=11), "a red disc")
    small = np.zeros((4, 6), dtype=np.uint8)
    small[:, 3:] = 255
    result = editor.drag(prepared, POINTS, mask=small)
    assert result.mask.shape == (40, 48)
    assert result.mask[:, 24:].all() and not result.mask[:, :24].any()


def test_cancel_mid_drag_then_drag_again(editor, make_image):
    picture = make_image(50, 37, seed=12)
    config = editor.config.replace(max_drag_steps=5, reach_threshold=0.5)
    reference = editor.drag(editor.prepare(picture, "a red disc", config=config), POINTS)
    assert reference.steps == 5                       # an uncancelled drag runs all its steps

    prepared = editor.prepare(picture, "a red disc", config=config)
    events = []
    cancel = lambda: sum(e.stage == "drag" for e in events) >= 3
    with pytest.raises(DragCancelled, match="can be dragged again"):
        editor.drag(prepared, POINTS, progress=events.append, cancel=cancel)
    assert [e.step for e in events if e.stage == "drag"] == [0, 1, 2]   # stopped mid-drag
    assert not any(e.stage in ("denoise", "decode") for e in events)

    again = editor.drag(prepared, POINTS)
    assert again.steps == 5
    assert again.trajectory == reference.trajectory
    assert np.array_equal(pixels(again), pixels(reference))


def test_cancel_during_lora_training_leaves_the_editor_usable(fresh_model, small_config, make_image, tmp_path):
    editor = DragEditor(fresh_model, config=small_config.replace(lora_steps=3), cache_dir=tmp_path)
    first = editor.prepare(make_image(48, 40, seed=13), "a red disc")
    before = editor.drag(first, POINTS)

    events = []
    cancel = lambda: any(e.stage == "lora" for e in events)
    with pytest.raises(DragCancelled):
        editor.prepare(make_image(48, 40, seed=14), "a red disc", progress=events.append, cancel=cancel)
    assert not list((tmp_path / "lora").glob("*.tmp"))
    # The cancelled training took the adapter out of the UNet: the first image's LoRA must come back.
    after = editor.drag(first, POINTS)
    assert np.array_equal(pixels(after), pixels(before))


def test_two_editors_sharing_one_model_keep_their_own_lora(fresh_model, small_config, make_image, tmp_path):
    one = DragEditor(fresh_model, config=small_config, cache_dir=tmp_path)
    two = DragEditor(fresh_model, config=small_config, cache_dir=tmp_path)
    first = one.prepare(make_image(48, 40, seed=15), "a red disc")
    before = one.drag(first, POINTS)
    two.drag(two.prepare(make_image(48, 40, seed=16), "a red disc"), POINTS)
    after = one.drag(first, POINTS)
    assert np.array_equal(pixels(after), pixels(before))


def test_exif_rotated_odd_sized_image_is_edited_as_displayed(editor, tmp_path, make_image):
    displayed = make_image(45, 29, seed=17)                  # what the user sees: 45x29
    stored = np.ascontiguousarray(np.rot90(displayed, k=1))  # stored 29x45, "rotate 90 CW to display"
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif.tobytes())

    # x = 40 exists only in the displayed orientation (the stored image is 29 wide).
    result = editor.run(DragRequest(str(path), [{"handle": [40, 10], "target": [30, 20]}], prompt="a red disc"))
    assert result.original.size == (45, 29)
    assert np.array_equal(np.asarray(result.original), displayed)
    assert result.image.size == (45, 29)
    (x, y), = result.trajectory[0]
    assert abs(x - 40) <= 45 / 32 / 2 + 0.01 and abs(y - 10) <= 29 / 20 / 2 + 0.01


def test_bad_points_fail_before_any_preparation(editor, make_image, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("prepared an image for a request with bad points")

    monkeypatch.setattr(editor, "prepare", no_work)
    monkeypatch.setattr(lora_finetuning, "train_identity_lora", no_work)
    picture = make_image(50, 37, seed=18)
    with pytest.raises(InputError, match="outside the 50x37 image"):
        editor.run(DragRequest(picture, [{"handle": [10, 12], "target": [80, 20]}]))
    with pytest.raises(InputError, match="no point pairs given"):
        editor.run(DragRequest(picture, []))
    with pytest.raises(InputError, match="needs an image"):
        editor.run(DragRequest(None, POINTS))


def test_plan_says_whether_a_lora_is_trained_and_how_long_it_takes(fresh_model, small_config, make_image, tmp_path):
    from dragwidget.run_plan import RATES_FILE, StageRates, rate_key

    editor = DragEditor(fresh_model, config=small_config, cache_dir=tmp_path)
    job = DragRequest(make_image(48, 40, seed=19), POINTS, prompt="a red disc")
    before = editor.plan(job)
    assert before.needs_lora and before.lora_steps == small_config.lora_steps == 2
    assert before.expected_seconds is None and before.total_seconds is None    # nothing measured yet

    editor.run(job)
    again = editor.plan(job)                                                   # prepared in memory
    assert not again.needs_lora and again.lora_steps == 0
    assert again.steps["inversion"] == 0 and again.expected_seconds["lora"] == 0.0
    assert again.expected_seconds["drag"] > 0 and again.total_seconds > 0
    other = editor.plan(DragRequest(make_image(48, 40, seed=20), POINTS, prompt="a red disc"))
    assert other.needs_lora and other.expected_seconds["lora"] > 0              # same size: the measured rate

    # Another editor (another process, as far as memory goes) finds the LoRA on disk and the rates in the file.
    elsewhere = DragEditor(fresh_model, config=small_config, cache_dir=tmp_path).plan(job)
    assert not elsewhere.needs_lora and elsewhere.steps["inversion"] == small_config.inversion_steps
    key = rate_key(fresh_model, editor.prepared_for(job.image, job.prompt).working_size, small_config.lora_batch_size)
    on_disk = StageRates(tmp_path / RATES_FILE)
    assert all(on_disk.rate(key, stage) > 0 for stage in ("lora", "inversion", "drag", "denoise", "decode"))
    assert on_disk.estimate(key, again.steps) == (again.expected_seconds, True)


def test_plan_of_the_embedded_model_uses_its_shipped_timings_until_measured_here(tmp_path, make_image):
    model = load_model("toy", device="cpu")
    assert set(model.shipped_stage_rates) == {"lora", "inversion", "drag", "gooddrag", "denoise", "decode"}
    editor = DragEditor(model, cache_dir=tmp_path)
    config = editor.config.replace_for_method(lora_steps=3, max_drag_steps=2)   # the toy's method's own LoRA steps
    job = DragRequest(make_image(64, 64, seed=4), [((20, 30), (40, 30))], prompt="a red disc", config=config)
    before = editor.plan(job)
    assert before.needs_lora and not before.measured_here
    assert before.expected_seconds["lora"] == pytest.approx(3 * model.shipped_stage_rates["lora"])
    editor.run(job)
    after = editor.plan(DragRequest(make_image(64, 64, seed=5), job.points, prompt="a red disc", config=config))
    assert after.needs_lora and after.measured_here
    assert after.expected_seconds["lora"] != before.expected_seconds["lora"]      # this machine's own rate now
