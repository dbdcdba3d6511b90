"""DragBench: running the engine over a benchmark folder and scoring the results (issue 12).

The folder is a small DragBench look-alike built from ShapesBench scenes (same files, same
metadata pickle), edited by the embedded toy model and scored with `--dift-model toy`.

IF needs LPIPS's AlexNet weights, which cannot be downloaded here: the IF tests build LPIPS from
the `lpips` package with a locally constructed, randomly initialised AlexNet-shaped backbone (a
stand-in `torchvision.models.alexnet`). That exercises the IF plumbing (resizing, scaling, the
package's own linear layers and averaging), not the numbers the real weights give.
"""

import importlib.machinery
import json
import pickle
import sys
import types
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from dragwidget import DragEditor, load_model
from dragwidget.cli import main
from dragwidget.dragbench.bench_run import RESULT_IMAGE, RESULT_INFO, run_dragbench
from dragwidget.dragbench.dift import load_dift
from dragwidget.dragbench.metrics import MissingMetricError, evaluate, image_fidelity, load_lpips
from dragwidget.dragbench.samples import SampleError, find_samples, load_sample, select_shard
from dragwidget.toy.shapes_bench import make_cases

# The paper's method with a few steps: quick, and its step count is what the sweep test varies
FAST = ["--set", "lora_steps=2", "--set", "method=dragdiffusion", "--set", "max_drag_steps=4"]


def write_sample(folder, image, prompt, points, mask):
    folder.mkdir(parents=True)
    Image.fromarray(image).save(folder / "original_image.png")
    Image.fromarray(image).save(folder / "user_drag.png")
    with open(folder / "meta_data.pkl", "wb") as file:
        pickle.dump({"prompt": prompt, "points": points, "mask": mask.astype(np.uint8)}, file)


def as_sample(case):
    points = [[int(round(v)) for v in pair[key]] for pair in case.pairs for key in ("handle", "target")]
    return case.image, case.scene.caption, points, case.mask


@pytest.fixture(scope="module")
def bench_folder(tmp_path_factory):
    """Four samples in three categories, one of them two folders deep."""
    root = tmp_path_factory.mktemp("dragbench")
    cases = make_cases(4, seed=21)
    for case, where in zip(cases, ["animals/cat_1", "animals/cat_2", "art_work/painting", "objects/cups/cup_1"]):
        write_sample(root / where, *as_sample(case))
    return root


@pytest.fixture(scope="module")
def toy_editor(tmp_path_factory):
    editor = DragEditor("toy", cache_dir=tmp_path_factory.mktemp("lora_cache"))
    return editor, editor.config.replace(lora_steps=2, method="dragdiffusion", max_drag_steps=4)


def test_samples_are_found_at_any_depth_with_their_categories(bench_folder):
    samples = find_samples(bench_folder)
    assert [s.name for s in samples] == ["animals/cat_1", "animals/cat_2", "art_work/painting", "objects/cups/cup_1"]
    assert [s.category for s in samples] == ["animals", "animals", "art_work", "objects/cups"]
    loaded = load_sample(samples[0])
    assert loaded.image.size == (64, 64) and loaded.mask.dtype == bool and loaded.pairs[0].keys() == {"handle", "target"}


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    folder = tmp_path / "bad" / "sample"
    write_sample(folder, np.zeros((8, 8, 3), np.uint8), "p", [[1, 1], [2, 2]], np.ones((8, 8)))
    (folder / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": "p", "points": Payload(), "mask": None}))
    with pytest.raises(SampleError, match="builtins.exec"):
        load_sample(find_samples(tmp_path / "bad")[0])
    assert not marker.exists()


def test_bench_then_eval_end_to_end_with_the_toy_model(bench_folder, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["bench", "dragbench", "--data", str(bench_folder), "--model", "toy", "--out", str(out), *FAST]) == 0
    for name in ("animals/cat_1", "animals/cat_2", "art_work/painting", "objects/cups/cup_1"):
        assert Image.open(out / name / RESULT_IMAGE).size == (64, 64)
        info = json.loads((out / name / RESULT_INFO).read_text())
        assert info["sample"] == name and len(info["final_handles"]) == len(info["targets"])
        assert info["timings"]["optimisation"] > 0 and info["config"]["lora_steps"] == 2
        # the verdict read from the picture, beside what the tracker believed
        assert isinstance(info["reached"], bool) and info["reached"] == info["verdict"]["reached"]
        assert len(info["verdict"]["pairs"]) == len(info["targets"]) and isinstance(info["tracker_reached"], bool)

    report_path = tmp_path / "scores.json"
    assert main(["eval", "dragbench", "--data", str(bench_folder), "--results", str(out), "--metrics", "md",
                 "--dift-model", "toy", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert set(report["categories"]) == {"animals", "art_work", "objects/cups"}
    assert report["categories"]["animals"]["samples"] == 2 and report["overall"]["samples"] == 4
    pairs = [d for row in report["samples"] for d in row["distances"]]
    assert report["overall"]["md"] == pytest.approx(np.mean(pairs)) and report["overall"]["pairs"] == len(pairs)
    assert report["dift"]["block"] == 2 and report["dift"]["model"] == "toy"   # the toy's shipped DIFT settings
    assert report_path.with_suffix(".png").is_file()
    assert "overall" in capsys.readouterr().out


def drag_length(pair):
    return float(np.hypot(pair["target"][0] - pair["handle"][0], pair["target"][1] - pair["handle"][1]))


def test_mean_distance_of_known_answers(tmp_path):
    """The original shifted by exactly the drag vector: MD near 0; the original unedited: MD near the drag length."""
    cases = [case for case in make_cases(24, seed=11) if case.kind == "one"][:8]
    data, shifted, unedited = tmp_path / "data", tmp_path / "shifted", tmp_path / "unedited"
    for case in cases:
        image, prompt, points, mask = as_sample(case)
        write_sample(data / "c" / case.name, image, prompt, points, mask)
        (dx, dy), = [(t - h for h, t in zip(points[0], points[1]))]
        for folder, picture in ((shifted, np.roll(image, (dy, dx), axis=(0, 1))), (unedited, image)):
            (folder / "c" / case.name).mkdir(parents=True)
            Image.fromarray(picture).save(folder / "c" / case.name / RESULT_IMAGE)
    samples = find_samples(data)
    lengths = [drag_length(load_sample(s).pairs[0]) for s in samples]
    dift = load_dift("toy", "cpu")
    moved = evaluate(samples, shifted, ["md"], dift=dift)["overall"]["md"]
    still = evaluate(samples, unedited, ["md"], dift=dift)["overall"]["md"]
    assert moved < 0.3 * np.mean(lengths)
    assert 0.85 * np.mean(lengths) < still < 1.15 * np.mean(lengths)


def test_shards_together_equal_the_unsharded_run(bench_folder, toy_editor, tmp_path):
    editor, config = toy_editor
    samples = find_samples(bench_folder)
    halves = [select_shard(samples, 1, 2), select_shard(samples, 2, 2)]
    assert sorted(s.name for half in halves for s in half) == [s.name for s in samples]
    assert all(halves) and not set(halves[0]) & set(halves[1])
    for half in halves:
        run_dragbench(editor, half, tmp_path / "sharded", config)
    run_dragbench(editor, samples, tmp_path / "whole", config)
    for sample in samples:
        a = np.asarray(Image.open(tmp_path / "sharded" / sample.relative / RESULT_IMAGE))
        b = np.asarray(Image.open(tmp_path / "whole" / sample.relative / RESULT_IMAGE))
        assert np.array_equal(a, b), sample.name


def test_resume_after_an_interruption_redoes_nothing(bench_folder, toy_editor, tmp_path):
    editor, config = toy_editor
    samples = find_samples(bench_folder)
    out = tmp_path / "out"

    def interrupt_after_two(sample, status, details, done=[]):
        done.append(sample.name)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_dragbench(editor, samples, out, config, on_sample=interrupt_after_two)
    finished_at = {s.name: (out / s.relative / RESULT_INFO).stat().st_mtime_ns for s in samples[:2]}
    edited = []
    original_run = editor.run
    editor.run = lambda request, **kw: edited.append(1) or original_run(request, **kw)
    try:
        summary = run_dragbench(editor, samples, out, config, resume=True)
    finally:
        del editor.run
    assert summary["resumed"] == 2 and summary["done"] == 2 and len(edited) == 2
    assert finished_at == {s.name: (out / s.relative / RESULT_INFO).stat().st_mtime_ns for s in samples[:2]}
    assert all((out / s.relative / RESULT_IMAGE).is_file() for s in samples)


def test_malformed_samples_are_skipped_with_their_reason(bench_folder, tmp_path, capsys):
    data = tmp_path / "data"
    good = make_cases(1, seed=5)[0]
    write_sample(data / "ok" / "good", *as_sample(good))
    image, prompt, points, mask = as_sample(good)
    write_sample(data / "bad" / "odd_points", image, prompt, points[:3], mask)
    write_sample(data / "bad" / "outside", image, prompt, [[10, 10], [300, 10]], mask)
    write_sample(data / "bad" / "no_image", image, prompt, points, mask)
    (data / "bad" / "no_image" / "original_image.png").unlink()
    out = tmp_path / "out"
    assert main(["bench", "dragbench", "--data", str(data), "--model", "toy", "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "skipped bad/odd_points: bad/odd_points: points must be [x, y] pairs" in err
    assert "skipped bad/outside" in err and "outside the 64x64 image" in err
    assert "skipped bad/no_image: bad/no_image: original_image.png is missing" in err
    summary = json.loads((out / "run_shard1of1.json").read_text())
    assert summary["done"] == 1 and len(summary["failed"]) == 3
    assert (out / "ok" / "good" / RESULT_IMAGE).is_file()


@pytest.fixture
def local_alexnet(monkeypatch, tmp_path_factory):
    """The `lpips` package on a stand-in torchvision whose AlexNet is built here with random weights;
    asking it for pretrained weights behaves as torchvision offline: the download fails."""
    def alexnet(pretrained=False, **_):
        if pretrained:
            raise urllib.error.URLError("no network in this test")
        model = torch.nn.Module()
        model.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 64, 11, stride=4, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2),
            torch.nn.Conv2d(64, 192, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2),
            torch.nn.Conv2d(192, 384, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(384, 256, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(256, 256, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2))
        return model

    stand_in = types.ModuleType("torchvision")
    stand_in.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    stand_in.models = types.SimpleNamespace(alexnet=alexnet)
    for name in [name for name in sys.modules if name == "lpips" or name.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchvision", stand_in)
    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    import lpips

    torch.manual_seed(0)
    return lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval(), home


def test_image_fidelity_of_an_image_with_itself_is_one(local_alexnet, bench_folder):
    model, _ = local_alexnet
    sample = load_sample(find_samples(bench_folder)[0])
    assert image_fidelity(model, sample.image, sample.image) == pytest.approx(1.0, abs=1e-6)
    shifted = Image.fromarray(np.roll(np.asarray(sample.image), 9, axis=1))
    assert image_fidelity(model, sample.image, shifted) < 1.0
    # a result at another size is resized to the original's first, as the reference does
    assert image_fidelity(model, sample.image, sample.image.resize((128, 128), Image.BILINEAR)) > \
        image_fidelity(model, sample.image, shifted)


def test_missing_alexnet_weights_are_named_with_where_to_get_them(local_alexnet, bench_folder, tmp_path, capsys):
    _, home = local_alexnet
    with pytest.raises(MissingMetricError) as error:
        load_lpips("cpu")
    message = str(error.value)
    assert f"{home}/hub/checkpoints/alexnet-owt-7be5be79.pth is missing" in message
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in message and "--metrics md" in message
    # the command refuses at once, before loading a DIFT model or scoring anything
    assert main(["eval", "dragbench", "--data", str(bench_folder), "--results", str(tmp_path), "--dift-model", "toy"]) == 2
    assert "alexnet-owt-7be5be79.pth is missing" in capsys.readouterr().err


def test_a_sweep_writes_one_scored_row_per_setting(tmp_path):
    data = tmp_path / "data"
    for case in make_cases(2, seed=8):
        write_sample(data / "c" / case.name, *as_sample(case))
    out = tmp_path / "out"
    assert main(["bench", "dragbench", "--data", str(data), "--model", "toy", "--out", str(out), *FAST,
                 "--sweep", "max_drag_steps=1,4", "--metrics", "md", "--dift-model", "toy"]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [(row["setting"], row["value"], row["samples"]) for row in rows] == [("max_drag_steps", 1, 2), ("max_drag_steps", 4, 2)]
    assert all((out / f"max_drag_steps={v}" / "c" / "case_000" / RESULT_IMAGE).is_file() for v in (1, 4))
    # one drag step barely moves anything: the content stays about one drag length from the targets
    assert rows[0]["md"] == pytest.approx(rows[0]["drag_length"], rel=0.3)


def test_an_interrupted_command_says_how_to_go_on(bench_folder, tmp_path, monkeypatch, capsys):
    from dragwidget.dragbench import bench_run

    finished_one = bench_run.edit_sample

    def edit_then_interrupt(editor, sample, out, config, calls=[]):
        calls.append(sample)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return finished_one(editor, sample, out, config)

    monkeypatch.setattr(bench_run, "edit_sample", edit_then_interrupt)
    out = tmp_path / "out"
    assert main(["bench", "dragbench", "--data", str(bench_folder), "--model", "toy", "--out", str(out), *FAST]) == 130
    err = capsys.readouterr().err
    assert "interrupted after 1 of 4 samples" in err and "with --resume" in err
    assert (out / "animals" / "cat_1" / RESULT_INFO).is_file() and not (out / "animals" / "cat_2").exists()


@pytest.mark.parametrize("command, message", [
    (["bench", "dragbench", "--out", "{tmp}/o", "--shard", "3/2"], "--shard expects i/n with 1 <= i <= n"),
    (["bench", "dragbench", "--out", "{tmp}/o", "--sweep", "lora_steps="], "--sweep expects KEY=V1,V2"),
    (["eval", "dragbench", "--results", "{tmp}", "--metrics", "if,ssim"], "--metrics takes a comma-separated list"),
    (["eval", "dragbench", "--results", "{tmp}/nothing"], "--results {tmp}/nothing: not a folder"),
    (["eval", "dragbench", "--results", "{tmp}", "--metrics", "md", "--dift-model", "toy", "--dift-block", "7"],
     "DIFT block 7 (--dift-block) does not exist: toy has 4 decoder blocks"),
])
def test_bad_options_are_refused_with_a_specific_message(bench_folder, tmp_path, capsys, command, message):
    args = [part.format(tmp=tmp_path) for part in command] + ["--data", str(bench_folder)]
    assert main(args) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_a_folder_without_samples_says_what_a_sample_is(tmp_path, capsys):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    assert main(["bench", "dragbench", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no DragBench samples found: a sample is a folder with original_image.png and meta_data.pkl" in \
        capsys.readouterr().err
