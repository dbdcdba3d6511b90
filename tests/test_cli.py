"""`dragwidget edit`, run in-process: a full edit on the tiny model, and one-line errors (exit 2)."""

import json

import numpy as np
import pytest
from PIL import Image

from dragwidget import cli


def run_cli(args, capsys):
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit_:        # argparse's own errors leave through SystemExit
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith("dragwidget: error:")]


@pytest.fixture
def edit_args(tiny_model_dir, image_file, tmp_path):
    image = image_file(50, 37)      # neither side a multiple of 8

    def make(name, *extra):
        return ["edit", image, "--model", tiny_model_dir, "--prompt", "a red disc",
                "--points", "10,12,30,20", "--lora-steps", 2, "--drag-steps", 3, "--seed", 42,
                "--out", tmp_path / f"{name}.png", "--report", tmp_path / f"{name}.json", *extra]
    return make


def test_full_edit_writes_image_and_report_and_is_reproducible(edit_args, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DRAGWIDGET_CACHE", str(tmp_path / "cache"))
    code, out, err = run_cli(edit_args("first"), capsys)
    assert code == 0, err
    assert "wrote" in out and "(50x37)" in out

    edited = Image.open(tmp_path / "first.png")
    assert edited.size == (50, 37) and edited.mode == "RGB"
    report = json.loads((tmp_path / "first.json").read_text())
    assert report["image_size"] == [50, 37]
    assert report["pairs"] == [{"handle": [10.0, 12.0], "target": [30.0, 20.0]}]
    assert report["config"]["lora_steps"] == 2 and report["config"]["max_drag_steps"] == 3
    assert report["config"]["seed"] == 42
    assert report["config"]["num_inference_steps"] == 10          # the tiny model's shipped settings
    assert report["reused"] == {"lora": "trained", "inversion": "computed"}
    for stage in ("lora", "inversion", "optimisation", "denoise", "decode"):
        assert report["timings"][stage] >= 0
    assert report["timings"]["lora"] > 0 and report["timings"]["denoise"] > 0

    # Handles and trajectory are in input pixels: the first entry is the handle itself (up to the
    # rounding onto the 32x24 supervision grid: 50/32 = 1.56 and 37/24 = 1.54 px per cell).
    trajectory = report["trajectory"]
    assert len(trajectory) == report["steps"] + 1 and 1 <= report["steps"] <= 3
    assert abs(trajectory[0][0][0] - 10) <= 0.79 and abs(trajectory[0][0][1] - 12) <= 0.78
    assert report["final_handles"] == trajectory[-1]
    for step in trajectory:
        (x, y), = step
        assert 0 <= x <= 49 and 0 <= y <= 36

    # Same seed, second run: LoRA from the disk cache, pixel-identical result.
    code, _, err = run_cli(edit_args("second"), capsys)
    assert code == 0, err
    second_report = json.loads((tmp_path / "second.json").read_text())
    assert second_report["reused"]["lora"] == "disk cache"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "second.png")), np.asarray(edited))
    assert second_report["trajectory"] == trajectory


def test_edit_with_a_mask_of_another_size(edit_args, tmp_path, capsys):
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[:, 10:] = 255                                 # right half editable
    Image.fromarray(mask).save(tmp_path / "mask.png")
    code, _, err = run_cli(edit_args("masked", "--mask", tmp_path / "mask.png"), capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "masked.png").size == (50, 37)


def expect_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_cli_missing_image(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_cli(["edit", tmp_path / "nothere.png", "--points", "1,2,3,4", "--model", tiny_model_dir], capsys)
    expect_one_line_error(code, err, "image file not found", "nothere.png")


def test_cli_not_an_image(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "fake.jpg"
    path.write_text("hello")
    code, _, err = run_cli(["edit", path, "--points", "1,2,3,4", "--model", tiny_model_dir], capsys)
    expect_one_line_error(code, err, "fake.jpg is not an image that Pillow can read")


@pytest.mark.parametrize("points,fragment", [
    ("60,10,20,10", "handle (60, 10) is outside the 50x37 image"),
    ("1,2,3", "got 3 numbers; each pair needs 4"),
    ("", "no point pairs given"),
    ("10,10,10,10", "handle and target are the same point (10, 10)"),
    ("1,2,3,x", "'x' is not a number"),
])
def test_cli_bad_points(points, fragment, tiny_model_dir, image_file, capsys):
    code, _, err = run_cli(["edit", image_file(50, 37), "--points", points, "--model", tiny_model_dir], capsys)
    expect_one_line_error(code, err, fragment)


def test_cli_missing_required_argument(image_file, capsys):
    code, _, err = run_cli(["edit", image_file(50, 37)], capsys)
    expect_one_line_error(code, err, "--points")


def test_cli_bad_mask(tiny_model_dir, image_file, tmp_path, capsys):
    code, _, err = run_cli(["edit", image_file(50, 37), "--points", "1,2,3,4", "--model", tiny_model_dir,
                            "--mask", tmp_path / "nomask.png"], capsys)
    expect_one_line_error(code, err, "mask file not found")


def test_cli_unknown_model_without_network(image_file, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, _, err = run_cli(["edit", image_file(50, 37), "--points", "1,2,3,4",
                            "--model", "nobody-here/no-such-model-anywhere"], capsys)
    # The multi-line explanation is folded onto the one error line.
    expect_one_line_error(code, err, "could not load model 'nobody-here/no-such-model-anywhere'",
                          "Tried:", "To fix:", "--model /path/to/folder")


def test_cli_nonexistent_local_folder(image_file, tmp_path, capsys):
    code, _, err = run_cli(["edit", image_file(50, 37), "--points", "1,2,3,4",
                            "--model", tmp_path / "missing" / "model"], capsys)
    expect_one_line_error(code, err, "does not exist", "Give an existing folder")


def test_cli_unknown_setting(tiny_model_dir, image_file, capsys):
    code, _, err = run_cli(["edit", image_file(50, 37), "--points", "1,2,3,4", "--model", tiny_model_dir,
                            "--set", "no_such_setting=1"], capsys)
    expect_one_line_error(code, err, "no_such_setting")
