"""Sessions: the DragBench sample layout, safe loading, and DragWidget.load_session being all or nothing."""

from __future__ import annotations

import json
import os
import pickle
import threading

import numpy as np
import pytest
from PIL import Image

from dragwidget.errors import InputError
from dragwidget.widget import DragWidget, load_session, save_session
from dragwidget.widget.session import safe_load_pickle
from widget_fakes import FakeEditor, click, picture


def test_session_round_trip(tmp_path):
    widget = DragWidget(picture(48, 32), prompt="two squares", model="fake", lora_steps=5, mask_weight=0.3)
    widget.points = [{"handle": [3, 4], "target": [20, 10]}, {"handle": [40, 30], "target": [30.5, 20]}]
    mask = np.zeros((32, 48), bool)
    mask[5:20, 10:30] = True
    widget.mask = mask
    folder = widget.save_session(tmp_path / "s")
    for name in ("original_image.png", "meta_data.pkl", "meta_data.json", "mask.png", "user_drag.png"):
        assert (folder / name).is_file()
    meta = safe_load_pickle((folder / "meta_data.pkl").read_bytes())
    assert meta["prompt"] == "two squares"
    assert meta["points"] == [[3, 4], [20, 10], [40, 30], [30.5, 20]]
    assert meta["mask"].dtype == np.uint8 and meta["mask"].shape == (32, 48) and meta["mask"].sum() == mask.sum()
    assert json.loads((folder / "meta_data.json").read_text())["parameters"]["lora_steps"] == 5

    other = DragWidget.from_session(folder, model="fake")
    assert other.points == widget.points and np.array_equal(other.mask, mask)
    assert np.array_equal(np.asarray(other.image), np.asarray(widget.image))
    assert (other.prompt, other.lora_steps, other.mask_weight) == ("two squares", 5, 0.3)
    assert other.undo() is None                                   # a loaded session starts a new history

    (folder / "meta_data.json").unlink()                          # a DragBench sample: pickle only
    session = load_session(folder)
    assert session.points == widget.points and np.array_equal(session.mask, mask)


def test_dragbench_pickle_from_another_writer(tmp_path):
    """Points as numpy ints and default-protocol numpy arrays, as DragBench's own tools write them."""
    folder = tmp_path / "sample"
    folder.mkdir()
    Image.fromarray(picture(20, 10)).save(folder / "original_image.png")
    mask = np.zeros((10, 20), np.uint8)
    mask[2:5, 3:9] = 1
    points = [np.array([1, 2]), np.array([5, 6])]
    for protocol in (2, 4, 5):
        (folder / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": "x", "points": points, "mask": mask}, protocol=protocol))
        session = load_session(folder)
        assert session.points == [{"handle": [1, 2], "target": [5, 6]}] and session.mask.sum() == 18


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    folder = save_session(tmp_path / "s", Image.fromarray(picture()), "p", [], None)
    (folder / "meta_data.json").unlink()
    (folder / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": "p", "points": [], "mask": Evil()}))
    with pytest.raises(InputError, match="refusing to load (posix|os|nt).system"):
        load_session(folder)
    assert not marker.exists()
    with pytest.raises(InputError, match="refusing"):
        safe_load_pickle(pickle.dumps(eval))
    with pytest.raises(InputError, match="meta_data.pkl"):
        safe_load_pickle(b"\x80\x04\x95")


# ---------------------------------------------------------------------- only files inside the folder
def _session(tmp_path, name="s", **meta):
    """A saved session whose meta_data.json fields are replaced by `meta`."""
    folder = save_session(tmp_path / name, Image.fromarray(picture(32, 32)), "p", [((2, 2), (9, 9))],
                          np.ones((32, 32), bool))
    path = folder / "meta_data.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **meta}))
    return folder


def test_a_mask_outside_the_folder_is_not_read_and_its_existence_not_told(tmp_path):
    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(secret)
    messages = []
    for name in ("../secret.png", "../missing.png", str(secret), str(tmp_path / "missing.png")):
        with pytest.raises(InputError) as caught:
            load_session(_session(tmp_path, mask=name))
        message = str(caught.value)
        assert "outside the session folder" in message and "not read" in message
        messages.append(message.replace(name, "NAME"))
    assert len(set(messages)) == 1                       # the same text, existing file or not


def test_symbolic_links_out_of_the_folder_are_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(outside / "mask.png")
    Image.fromarray(picture(32, 32)).save(outside / "original_image.png")
    folder = _session(tmp_path)
    (folder / "mask.png").unlink()
    os.symlink(outside / "mask.png", folder / "mask.png")
    with pytest.raises(InputError, match="mask: 'mask.png' leads outside the session folder"):
        load_session(folder)
    other = _session(tmp_path, "t")
    (other / "original_image.png").unlink()
    os.symlink(outside / "original_image.png", other / "original_image.png")
    with pytest.raises(InputError, match="original_image.png.*leads outside"):
        load_session(other)
    inside = _session(tmp_path, "u")                     # a link that stays inside is fine
    (inside / "mask.png").rename(inside / "real_mask.png")
    os.symlink(inside / "real_mask.png", inside / "mask.png")
    assert load_session(inside).mask.all()


# ---------------------------------------------------------------------- wrong types name the field
@pytest.mark.parametrize("meta, field", [
    ({"points": "10,10,20,20", "pairs": None}, "points"),
    ({"points": [["a", "b"], ["c", "d"]], "pairs": None}, "points"),
    ({"pairs": [{"handle": "here", "target": [3, 3]}]}, "points"),
    ({"prompt": 5}, "prompt"),
    ({"mask": 3}, "mask"),
    ({"parameters": ["lora_steps", 3]}, "parameters"),
])
def test_wrong_types_in_meta_data_json_name_the_field(tmp_path, meta, field):
    with pytest.raises(InputError, match=f"meta_data.json: {field}"):
        load_session(_session(tmp_path, **meta))


def test_a_json_list_instead_of_an_object(tmp_path):
    folder = _session(tmp_path)
    (folder / "meta_data.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="meta_data.json: the file must be an object"):
        load_session(folder)


@pytest.mark.parametrize("meta, field", [
    ({"prompt": "p", "points": [[1, 2], [5, 6]], "mask": np.array([["a", "b"], ["c", "d"]])}, "mask"),
    ({"prompt": "p", "points": ["1,2", "5,6"], "mask": None}, "points"),
    ({"prompt": "p", "points": 7, "mask": None}, "points"),
    ({"prompt": b"p", "points": [], "mask": None}, "prompt"),
])
def test_wrong_types_in_meta_data_pkl_name_the_field(tmp_path, meta, field):
    folder = tmp_path / "sample"
    folder.mkdir()
    Image.fromarray(picture(20, 10)).save(folder / "original_image.png")
    (folder / "meta_data.pkl").write_bytes(pickle.dumps(meta))
    with pytest.raises(InputError, match=f"meta_data.pkl: {field}"):
        load_session(folder)


@pytest.mark.parametrize("parameters, field", [
    ({"lora_steps": "many"}, "lora_steps"),           # wrong type: the trait says so
    ({"drag_steps": 0}, "max_drag_steps"),            # out of range: DragConfig says so
    ({"learning_rate": -1.0}, "drag_lr"),
    ({"keep_outside_mask": "yes"}, "keep_outside_mask"),
    ({"model": 3}, "model"),
])
def test_bad_parameters_name_the_parameter(tmp_path, parameters, field):
    folder = _session(tmp_path, parameters=parameters)
    with pytest.raises(InputError, match=field):
        DragWidget(model="fake").load_session(folder)


# ---------------------------------------------------------------------- a failed load changes nothing
def _snapshot(widget):
    return (widget.points, widget.mask.copy(), np.asarray(widget.image).copy(), widget.prompt, widget.lora_steps,
            widget.drag_steps, widget.pending_handle, widget.toolbar.undo_button.disabled)


def _same(a, b):
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b))


@pytest.mark.parametrize("meta", [
    {"parameters": {"lora_steps": 3, "drag_steps": 0}},        # the last parameter is the bad one
    {"parameters": {"lora_steps": 3, "seed": "x"}},
    {"pairs": [{"handle": [1, 1], "target": [500, 1]}]},       # a point outside the image
    {"mask": "../elsewhere.png"},
])
def test_a_failed_load_leaves_image_points_mask_and_history_as_they_were(tmp_path, meta):
    folder = _session(tmp_path, **meta)
    widget = DragWidget(picture(48, 40, seed=5), prompt="mine", model="fake", lora_steps=9)
    click(widget, 40, 40)
    click(widget, 120, 40)
    widget.mode = "mask"
    widget.canvas.on_mouse_down(100, 100)
    widget.canvas.on_mouse_up(140, 100)
    before = _snapshot(widget)
    with pytest.raises(InputError):
        widget.load_session(folder)
    assert _same(_snapshot(widget), before)
    assert widget.undo() == "stroke" and widget.undo() == "target"   # the history is still there


def test_loading_a_session_while_a_run_works_is_refused(tmp_path):
    started, release = threading.Event(), threading.Event()

    def behave(request, progress, cancel):
        started.set()
        release.wait(10)
        raise InputError("stopped")

    folder = _session(tmp_path)
    widget = DragWidget(picture(), editor=FakeEditor(behave))
    widget.points = [((1, 1), (5, 5))]
    before = _snapshot(widget)
    widget.run()
    assert started.wait(10)
    try:
        with pytest.raises(RuntimeError, match="a run is in progress: press Cancel"):
            widget.load_session(folder)
        widget.session_panel.load_clicked()                            # the button says it instead
        assert "a run is in progress" in widget.session_panel.message.value
    finally:
        release.set()
        widget.controller.runner.join(10)
    assert _same(_snapshot(widget), before)
