"""The stage benchmark still runs (a minimal edit on the session's tiny model folder)."""

import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_stages.py"


def test_bench_stages_runs_and_prints_every_stage(tiny_model_dir, capsys):
    bench = runpy.run_path(str(SCRIPT), run_name="bench_stages")
    code = bench["main"](["--tiny", "--model-dir", str(tiny_model_dir), "--lora-steps", "1", "--drag-steps", "2",
                          "--size", "40x24", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("\nmethod: ") == 3      # a table for each method
    tables = {}
    for section in out.split("\nmethod: ")[1:]:
        tables[section.split()[0]] = (section, {line.split()[0]: line.split() for line in section.splitlines()
                                                if line[:1].isalpha()})
    assert set(tables) == {"dragdiffusion", "gooddrag", "fastdrag"}
    out, table = tables["dragdiffusion"]
    assert "image 40x24; LoRA 1 steps" in out
    for stage in ("lora", "inversion", "optimisation", "denoise"):
        first, again, floor, ratio = (float(value) for value in table[stage][1:5])
        assert first > 0 and floor > 0
        # printed seconds are rounded to 1 ms and the ratio to 0.01: the ratio of the unrounded times
        # lies between these bounds
        assert (first - 0.0005) / (floor + 0.0005) - 0.005 <= ratio <= (first + 0.0005) / (floor - 0.0005) + 0.005
        assert (again == 0) == (stage in ("lora", "inversion"))   # a re-drag trains and inverts nothing
    assert table["lora"][-3:] == ["1", "+", "0"]                  # one LoRA step, with gradients
    assert table["inversion"][-3:] == ["0", "+", "35"]            # the reference settings: 35 of 50 DDIM steps
    assert "LoRA step" in out and "UNet pass kinds alone" in out
    first_total, again_total, floor_total = (float(value) for value in table["total"][1:4])
    assert again_total < first_total and floor_total > 0
    assert "drag steps / second" in out and "peak memory of the whole process" in out
    # each method with its published settings: GoodDrag inverts 38 of 50 steps; FastDrag 7 of 10, warps
    # instead of optimising (its one pass there: the features that find the handle's object) and denoises 7
    assert tables["gooddrag"][1]["inversion"][-3:] == ["0", "+", "38"]
    out, table = tables["fastdrag"]
    assert "optimisation" not in table and "drag steps / second" not in out
    assert table["inversion"][-3:] == ["0", "+", "7"] and table["denoise"][-3:] == ["0", "+", "7"]
    assert table["warp"][-3:] == ["0", "+", "1"] and float(table["warp"][1]) > 0
    assert float(table["total"][2]) < float(table["total"][1])
