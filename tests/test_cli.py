"""The command line, run in-process: a full edit on the tiny model, one-line errors (exit 2) before
any slow work, the train-toy and cache commands, instant help, and the offline fast fail."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragwidget import ModelNotFoundError, cli


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
    # the last line is the verdict on the picture, as the report has it
    report = json.loads((tmp_path / "first.json").read_text())
    verdict = out.strip().splitlines()[-1]
    assert verdict == report["verdict"]["says"]
    category = report["verdict"]["pairs"][0]["category"]
    assert verdict.startswith(category) and report["reached"] == (category == "reached, shape kept")
    assert report["verdict"]["pairs"][0]["drag_length"] == pytest.approx(21.54, abs=0.01)   # (10,12) -> (30,20)

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
    edited = np.asarray(Image.open(tmp_path / "masked.png"))
    assert edited.shape == (37, 50, 3)
    # With a mask, the CLI keeps the original's pixels outside it (the left half here) ...
    report = json.loads((tmp_path / "masked.json").read_text())
    assert report["kept_outside_mask"] is True and report["config"]["keep_outside_mask"] is True
    original = np.asarray(Image.open(edit_args("unused")[1]).convert("RGB"))
    assert np.array_equal(edited[:, :20], original[:, :20])

    # ... unless the user asks for the paper's plain decode.
    code, _, err = run_cli(edit_args("plain", "--mask", tmp_path / "mask.png", "--set", "keep_outside_mask=false"), capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "plain.json").read_text())
    assert report["kept_outside_mask"] is False
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "plain.png"))[:, :20], original[:, :20])


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


# ---------------------------------------------------------------- checked before the model loads

@pytest.fixture
def no_model_load(monkeypatch):
    """Every check below must answer before the (slow) model load."""
    import dragwidget.api

    class NotLoaded:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(dragwidget.api, "DragEditor", NotLoaded)


@pytest.fixture
def quick_edit(image_file, tmp_path):
    image = image_file(50, 37)

    def make(*extra):
        return ["edit", image, "--points", "10,12,30,20", "--model", "toy", *extra]
    return make


@pytest.mark.parametrize("options,fragments", [
    (["--set", "num_inference_steps=abc"], ["--set num_inference_steps=abc: num_inference_steps must be a whole number >= 1"]),
    (["--set", "num_inference_steps=0"], ["num_inference_steps must be a whole number >= 1, got 0"]),
    (["--set", "guidance_scale=high"], ["guidance_scale must be a number >= 0, got 'high'"]),
    (["--set", "max_drag_steps=2.5"], ["--set max_drag_steps=2.5: max_drag_steps must be a whole number"]),
    (["--set", "tracking_radius=-1"], ["tracking_radius must be a whole number >= 1, got -1"]),
    (["--set", "drag_lr=0"], ["drag_lr must be a number > 0"]),
    (["--set", "inversion_strength=1.5"], ["inversion_strength must be a number in (0, 1], got 1.5"]),
    (["--drag-steps", -5], ["--drag-steps -5: max_drag_steps must be a whole number >= 1, got -5"]),
    (["--lora-steps", -3], ["--lora-steps -3: lora_steps must be a whole number >= 0, got -3"]),
    (["--set", "max_drag_step=3"], ["no setting 'max_drag_step'", "did you mean max_drag_steps"]),
    (["--set", "seed"], ["--set expects KEY=VALUE"]),
])
def test_bad_settings_are_one_line_errors_before_the_model_loads(options, fragments, quick_edit, no_model_load, capsys):
    code, _, err = run_cli(quick_edit(*options), capsys)
    expect_one_line_error(code, err, *fragments)


@pytest.mark.parametrize("options,given", [
    (["--seed", 1, "--set", "seed=1"], "(--seed 1 and --set seed=1)"),
    (["--set", "seed=1", "--set", "seed=2"], "(--set seed=1 and --set seed=2)"),
    (["--lora-steps", 3, "--set", "lora_steps=4"], "(--lora-steps 3 and --set lora_steps=4)"),
    (["--drag-steps", 3, "--set", "max_drag_steps=4"], "(--drag-steps 3 and --set max_drag_steps=4)"),
])
def test_a_setting_given_twice_is_one_clear_error(options, given, quick_edit, no_model_load, capsys):
    code, _, err = run_cli(quick_edit(*options), capsys)
    expect_one_line_error(code, err, "is given twice", given)


def test_settings_go_on_top_of_the_models_own(edit_args, tmp_path, capsys):
    code, _, err = run_cli(edit_args("typed", "--set", "mutual_attention=off", "--set", "drag_lr=0.02"), capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "typed.json").read_text())["config"]
    assert config["mutual_attention"] is False and config["drag_lr"] == 0.02
    assert config["num_inference_steps"] == 10                   # still the tiny model's shipped setting


def test_output_paths_are_checked_before_the_model_loads(quick_edit, no_model_load, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cases = [
        (["--out", tmp_path], ["--out", "is a folder; give a file name such as"]),
        (["--out", tmp_path / "edited.xyz"], ["Pillow cannot write '.xyz'", ".png"]),
        (["--out", tmp_path / "edited"], ["Pillow cannot write 'a file without extension'"]),
        (["--out", blocker / "sub" / "edited.png"], ["cannot create the folder", "a_file is a file"]),
        (["--out", tmp_path / "ok.png", "--report", tmp_path], ["--report", "is a folder"]),
        (["--out", tmp_path / "same.png", "--report", tmp_path / "same.png"], ["--report", "own path"]),
    ]
    for options, fragments in cases:
        code, _, err = run_cli(quick_edit(*options), capsys)
        expect_one_line_error(code, err, *fragments)

    # Tests run as root, who may write anywhere: stand in for a folder without write permission.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    code, _, err = run_cli(quick_edit("--out", locked / "edited.png"), capsys)
    expect_one_line_error(code, err, "no permission to write in the folder", "locked")
    code, _, err = run_cli(quick_edit("--out", tmp_path / "fine.png", "--report", locked / "new" / "r.json"), capsys)
    expect_one_line_error(code, err, "--report", "no permission to write in the folder")


@pytest.mark.parametrize("args,fragment", [
    (["bench", "shapes", "--cases", 0], "argument --cases: must be a whole number >= 1, got '0'"),
    (["bench", "shapes", "--set", "max_drag_steps=0"], "max_drag_steps must be a whole number >= 1"),
    (["features", "IMAGE", "--size", 0], "argument --size: must be a whole number >= 1, got '0'"),
    (["bench", "shapes", "--sweep", "feature_block"], "--sweep expects KEY=V1,V2,..."),
    (["bench", "shapes", "--sweep", "feature_block=1,x"], "feature_block"),
    (["bench", "shapes", "--sweep", "lora_steps=0", "--sweep", "lora_steps=1"], "lora_steps is given twice"),
    (["bench", "shapes", "--sweep", "inversion_strengh=0.5"], "inversion_strength"),
    (["features", "IMAGE", "--lora-steps", 2, "--set", "lora_steps=3"], "lora_steps is given twice"),
])
def test_bench_and_features_reject_bad_counts(args, fragment, image_file, no_model_load, capsys):
    args = [image_file(50, 37) if a == "IMAGE" else a for a in args]
    code, _, err = run_cli(args, capsys)
    expect_one_line_error(code, err, fragment)


def subparser(*names):
    parser = cli.build_parser()
    for name in names:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = commands.choices[name]
    return parser


def test_bench_shapes_sweep_writes_one_row_per_value(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """An ablation: one row per value of each swept setting, the base configuration run once
    and shared by both sweeps, every row scored on the same cases."""
    import dragwidget.toy.shapes_bench as shapes_bench

    monkeypatch.setenv("DRAGWIDGET_CACHE", str(tmp_path / "cache"))
    edits = []
    real_run_bench = shapes_bench.run_bench
    monkeypatch.setattr(shapes_bench, "run_bench", lambda *a, **k: edits.append(k["config"]) or real_run_bench(*a, **k))
    code, out, err = run_cli(["bench", "shapes", "--model", tiny_model_dir, "--cases", 1, "--seed", 2, "--out",
                              tmp_path / "ablation", "--set", "lora_steps=0", "--set", "max_drag_steps=2",
                              "--sweep", "feature_block=1,2", "--sweep", "inversion_strength=0.7,0.6"], capsys)
    assert code == 0, err
    table = json.loads((tmp_path / "ablation" / "sweep.json").read_text())
    assert [(row["setting"], row["value"]) for row in table["rows"]] == [
        ("feature_block", 1), ("feature_block", 2), ("inversion_strength", 0.7), ("inversion_strength", 0.6)]
    assert table["cases"] == 1 and table["seed"] == 2 and table["config"]["lora_steps"] == 0
    # the tiny model's base: block 2, strength 0.7; that configuration ran once for both sweeps
    assert [(c.feature_block, c.inversion_strength) for c in edits] == [(1, 0.7), (2, 0.7), (2, 0.6)]
    for row in table["rows"]:
        assert {"relative_distance", "iou", "lost_objects", "psnr_outside_mask", "by_kind"} <= set(row)
        assert row["case_relative_distance"] == [pytest.approx(row["relative_distance"])]
    assert "inversion_strength" in out and "sweep.json" in out


def test_every_bench_shapes_option_is_described():
    options = [a for a in subparser("bench", "shapes")._actions if a.option_strings]
    assert {"--cases", "--seed", "--model", "--device", "--out", "--set", "--sweep"} <= {o for a in options for o in a.option_strings}
    assert all(a.help for a in options), [a.option_strings for a in options if not a.help]


# ---------------------------------------------------------------- train-toy, cache

def test_train_toy_has_the_training_options(capsys):
    code, out, _ = run_cli(["train-toy", "--help"], capsys)
    assert code == 0
    for option in ("--unet-steps", "--vae-steps", "--checkpoint", "--out", "--device"):
        assert option in out


def test_train_toy_passes_its_options_to_the_training(monkeypatch, tmp_path, capsys):
    from dragwidget.toy import train

    calls = []
    monkeypatch.setattr(train, "train", lambda out, checkpoint, settings, device: calls.append(
        (out, checkpoint, settings, device)))
    code, _, err = run_cli(["train-toy", "--unet-steps", 4500, "--out", tmp_path / "toy",
                            "--checkpoint", tmp_path / "ckpt", "--vae-lr", "2e-3"], capsys)
    assert code == 0, err
    (out, checkpoint, settings, device), = calls
    assert out == tmp_path / "toy" and checkpoint == tmp_path / "ckpt" and device == "cpu"
    from dragwidget.toy.train_options import TrainSettings

    assert settings.unet_steps == 4500 != TrainSettings().unet_steps and settings.vae_lr == 2e-3
    assert settings.vae_steps == TrainSettings().vae_steps          # what was not given keeps its default


def test_train_toy_rejects_unknown_options(capsys):
    code, _, err = run_cli(["train-toy", "--epochs", "3"], capsys)
    expect_one_line_error(code, err, "unrecognized arguments")


def test_cache_info_and_clear(monkeypatch, tmp_path, capsys):
    from dragwidget import api as lora_cache   # the CLI reaches the cache through the public module

    entries = {"n": 3}
    monkeypatch.setattr(lora_cache, "cache_info", lambda folder=None: {
        "folder": str(folder), "entries": entries["n"], "bytes": 12_500_000 * entries["n"], "max_bytes": 2_000_000_000})

    def clear(folder=None):
        removed, entries["n"] = entries["n"], 0
        return removed
    monkeypatch.setattr(lora_cache, "clear_cache", clear)

    code, out, err = run_cli(["cache", "info", "--folder", tmp_path], capsys)
    assert code == 0, err
    assert f"LoRA cache {tmp_path}: 3 entries, 37.5 MB (limit 2000 MB)" in out
    code, out, err = run_cli(["cache", "clear", "--folder", tmp_path], capsys)
    assert code == 0, err
    assert f"removed 3 cached LoRA adapter(s) from {tmp_path}" in out and "0 entries, 0.0 MB" in out


def test_cache_info_of_an_empty_folder(tmp_path, capsys):
    code, out, err = run_cli(["cache", "info", "--folder", tmp_path / "empty"], capsys)
    assert code == 0, err
    assert "0 entries, 0.0 MB" in out


# ---------------------------------------------------------------- instant help: no torch

@pytest.mark.parametrize("argv", [
    ["--help"], ["edit", "--help"], ["bench", "shapes", "--help"], ["features", "--help"], ["train-toy", "--help"],
    ["cache", "--help"], ["cache", "info", "--help"], ["edit"], ["edit", "x.png", "--points", "1,2,3,4", "--set", "seed=-1"],
    ["bench", "shapes", "--cases", "0"],
])
def test_help_and_argument_errors_do_not_import_the_engine(argv):
    script = ("import sys\nfrom dragwidget import cli\n"
              f"try:\n    code = cli.main({argv!r})\nexcept SystemExit as exit_:\n    code = exit_.code\n"
              "print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-2:] in (["0", "False"], ["2", "False"]), done.stdout + done.stderr


def test_the_package_names_resolve_on_first_use():
    import dragwidget

    assert {"DragEditor", "load_model", "DragWidget"} <= set(dir(dragwidget))
    for name in dragwidget.__all__:
        assert getattr(dragwidget, name) is not None
    from dragwidget import DragEditor
    from dragwidget.editor import DragEditor as defined
    assert DragEditor is defined
    with pytest.raises(AttributeError):
        dragwidget.no_such_name


# ---------------------------------------------------------------- offline: fail at once

@pytest.fixture
def hub_unused(monkeypatch):
    """Loading must stop before any hub download is tried."""
    import diffusers

    def no_download(*args, **kwargs):
        raise AssertionError(f"tried the hub: {args} {kwargs}")
    monkeypatch.setattr(diffusers.UNet2DConditionModel, "from_pretrained", no_download)


def test_offline_mode_fails_at_once_without_the_network(monkeypatch, hub_unused):
    from huggingface_hub import constants

    from dragwidget import loading, model_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(model_source, "hub_reachable", lambda: pytest.fail("HF_HUB_OFFLINE forbids a network check"))
    with pytest.raises(ModelNotFoundError, match=r"(?s)not in the local cache and the hub is offline \(HF_HUB_OFFLINE is set\).*To fix:"):
        loading.load_model("nobody-here/no-such-model-anywhere", device="cpu")


def test_unreachable_hub_fails_at_once(monkeypatch, hub_unused):
    from huggingface_hub import constants

    from dragwidget import loading, model_source

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(model_source, "hub_reachable", lambda: False)
    with pytest.raises(ModelNotFoundError, match=r"(?s)the hub did not answer within .* s.*Tried:"):
        loading.load_model("nobody-here/no-such-model-anywhere", device="cpu")


def test_cached_model_loads_from_the_cache_when_the_hub_is_unreachable(monkeypatch):
    import diffusers
    import huggingface_hub
    from huggingface_hub import constants

    from dragwidget import loading, model_source

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(model_source, "hub_reachable", lambda: False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo_id, filename: f"/cache/{repo_id}/{filename}")
    asked = []

    def from_pretrained(*args, **kwargs):
        asked.append(kwargs)
        raise OSError("stop here")
    monkeypatch.setattr(diffusers.UNet2DConditionModel, "from_pretrained", from_pretrained)
    with pytest.raises(ModelNotFoundError):
        loading.load_model("someone/cached-model", device="cpu")
    assert asked[0]["local_files_only"] is True           # no hub retries for a model already here
