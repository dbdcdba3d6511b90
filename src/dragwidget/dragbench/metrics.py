"""DragBench's two metrics, following the reference evaluation scripts step by step.

- Image fidelity IF = 1 - LPIPS(AlexNet): the edited image is resized (bilinear) to the original's
  size, both are mapped to [-1, 1] and resized to 224x224 (bilinear), and LPIPS compares them.
- Mean distance MD: DIFT features of the original and of the edited image (resized to the
  original's size), each upsampled to the original's size; for every handle, the position in the
  edited image whose feature is most cosine-similar to the original's feature at the handle is
  where the handle's content went; MD is its pixel distance to the target, averaged over all
  point pairs (of the set, of a category, of a sample).

One difference, on purpose: the reference seeds the random generator once and draws the DIFT
noise for all samples in the order the file system lists them; here every image's noise comes
from a generator seeded with 42, so a sample's MD does not depend on the order, a shard or a resume.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..api import DIFT_SEED, DragWidgetError, best_match, dift_features, image_to_tensor, use_cpu_threads
from .bench_run import RESULT_IMAGE
from .dift import DiftSettings
from .samples import DragBenchSample, SampleError, load_sample

LPIPS_SIZE = 224
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_WEIGHTS}"
# The paper's Table 1 and later methods it is compared with (mean distance, image fidelity).
PAPER_RESULTS = {"DragDiffusion (paper)": (33.7, 0.89), "DragGAN": (58.0, 0.69), "GoodDrag": (23.0, 0.86),
                 "FastDrag": (32.2, 0.86)}


class MissingMetricError(DragWidgetError):
    """A metric cannot be computed here: what is missing and how to get it."""


def alexnet_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS


def load_lpips(device):
    """LPIPS with AlexNet from the `lpips` package; a specific error when it cannot be built here."""
    try:
        import lpips
    except Exception as error:   # torchvision that does not match torch fails with RuntimeError, not ImportError
        raise MissingMetricError(
            f"IF needs the lpips package and a torchvision that matches your torch ({type(error).__name__}: {error}); "
            "pip install lpips torchvision, or use --metrics md for the mean distance alone") from None
    weights = alexnet_weights_path()
    try:
        model = lpips.LPIPS(net="alex", verbose=False)
    except Exception as error:
        if weights.is_file():
            raise
        raise MissingMetricError(
            f"IF needs torchvision's AlexNet weights: {weights} is missing and could not be downloaded "
            f"({type(error).__name__}). Download {ALEXNET_URL} on a machine with internet and copy it to {weights} "
            "(set TORCH_HOME to use another folder), or use --metrics md for the mean distance alone") from None
    return model.to(device).eval()


@torch.no_grad()
def image_fidelity(lpips_model, original: Image.Image, edited: Image.Image) -> float:
    device = next(lpips_model.parameters()).device
    edited = edited.resize(original.size, Image.BILINEAR)
    pair = [F.interpolate(image_to_tensor(image, device), (LPIPS_SIZE, LPIPS_SIZE), mode="bilinear")
            for image in (original, edited)]
    return 1.0 - float(lpips_model(*pair).flatten()[0])


@torch.no_grad()
def point_distances(dift_model, settings: DiftSettings, original: Image.Image, edited: Image.Image, prompt: str,
                    pairs: Sequence[dict]) -> List[float]:
    """Per pair: pixel distance from the target to where the handle's content was found in `edited`."""
    edited = edited.resize(original.size, Image.BILINEAR)
    width, height = original.size
    maps = []
    for image in (original, edited):
        generator = torch.Generator().manual_seed(DIFT_SEED)
        features = dift_features(dift_model, image_to_tensor(image, dift_model.device), prompt, generator,
                                 timestep=settings.timestep, block=settings.block, ensemble=settings.ensemble)
        maps.append(F.interpolate(features, (height, width), mode="bilinear"))
    source, target_map = maps
    return [math.dist(best_match(source[0], target_map[0], pair["handle"]).best, pair["target"]) for pair in pairs]


def evaluate(samples: List[DragBenchSample], results: Path, metrics: Sequence[str], dift=None, lpips_model=None,
             on_sample: Optional[Callable[[DragBenchSample, dict], None]] = None) -> dict:
    """Score every sample that has a result under `results`; the others are listed with the reason.

    `dift`: (model, DiftSettings) from `dift.load_dift`, needed for MD; `lpips_model`, for IF.
    """
    rows, missing = [], []
    if dift is not None:
        use_cpu_threads(dift[0].device, dift[0].unet)   # the engine's per-model choice (README, Hardware)
    for sample in samples:
        edited_path = Path(results) / sample.relative / RESULT_IMAGE
        try:
            if not edited_path.is_file():
                raise SampleError(f"{sample.name}: no {RESULT_IMAGE} in {edited_path.parent}")
            loaded = load_sample(sample)
            with Image.open(edited_path) as opened:
                edited = opened.convert("RGB")
        except (SampleError, OSError) as error:
            missing.append({"sample": sample.name, "reason": str(error)})
            continue
        row = {"sample": sample.name, "category": sample.category}
        if "if" in metrics:
            row["if"] = image_fidelity(lpips_model, loaded.image, edited)
        if "md" in metrics:
            row["distances"] = point_distances(*dift, loaded.image, edited, loaded.prompt, loaded.pairs)
            row["md"] = float(np.mean(row["distances"]))
            row["drag_lengths"] = [math.dist(pair["handle"], pair["target"]) for pair in loaded.pairs]
        rows.append(row)
        if on_sample is not None:
            on_sample(sample, row)
    categories = {}
    for category in sorted({row["category"] for row in rows}):
        categories[category] = summarise([row for row in rows if row["category"] == category], metrics)
    return {"metrics": list(metrics), "overall": summarise(rows, metrics), "categories": categories,
            "samples": rows, "missing": missing, "dift": dift[1].to_dict() if dift is not None else None}


def summarise(rows: List[dict], metrics: Sequence[str]) -> dict:
    """IF: mean over samples; MD: mean over every point pair (as the reference averages)."""
    summary = {"samples": len(rows)}
    if "if" in metrics:
        summary["if"] = float(np.mean([row["if"] for row in rows])) if rows else None
    if "md" in metrics:
        distances = [d for row in rows for d in row["distances"]]
        summary["md"] = float(np.mean(distances)) if distances else None
        summary["pairs"] = len(distances)
        # what MD is when nothing moved, near enough: the context an MD needs
        summary["drag_length"] = float(np.mean([d for row in rows for d in row["drag_lengths"]])) if rows else None
    return summary


def format_report(report: dict) -> str:
    columns = list(report["metrics"]) + (["drag_length"] if "md" in report["metrics"] else [])
    titles = {"if": "IF", "md": "MD", "drag_length": "drag length"}
    header = f"{'category':<28}{'samples':>8}" + "".join(f"{titles[name]:>13}" for name in columns)
    lines = [header, "-" * len(header)]

    def line(name, summary):
        values = "".join(f"{summary[column]:>13.3f}" if summary.get(column) is not None else f"{'-':>13}"
                         for column in columns)
        return f"{name:<28}{summary['samples']:>8}{values}"

    lines += [line(category, summary) for category, summary in report["categories"].items()]
    lines += ["-" * len(header), line("overall", report["overall"])]
    paper = ", ".join(f"{name}: MD {md:g}, IF {fidelity:g}" for name, (md, fidelity) in PAPER_RESULTS.items())
    if "md" in report["metrics"]:
        lines.append("drag length: the mean handle-target distance, about the MD of an edit that moved nothing")
    lines.append(f"paper (Stable Diffusion 1.5 on DragBench): {paper}")
    if report["missing"]:
        lines.append(f"not scored ({len(report['missing'])}): " + "; ".join(m["reason"] for m in report["missing"][:5])
                     + (" ..." if len(report["missing"]) > 5 else ""))
    return "\n".join(lines)


def plot_report(report: dict, path: Path) -> None:
    """Per-category bars of each metric, and IF against MD beside the paper's methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report["metrics"]
    categories = list(report["categories"])
    figure, axes = plt.subplots(1, len(metrics) + 1, figsize=(5 * (len(metrics) + 1), 4.2))
    for axis, name in zip(axes, metrics):
        values = [report["categories"][c].get(name) or 0.0 for c in categories]
        axis.bar(range(len(categories)), values, color="tab:blue" if name == "if" else "tab:orange")
        axis.axhline(report["overall"][name] or 0.0, color="black", linestyle="--", label="overall")
        if name == "md":
            axis.scatter(range(len(categories)), [report["categories"][c]["drag_length"] for c in categories],
                         marker="_", s=400, color="black", label="drag length (no edit)")
        axis.set_xticks(range(len(categories)), categories, rotation=45, ha="right", fontsize=8)
        axis.set_title({"if": "image fidelity (1 - LPIPS), higher is better",
                        "md": "mean distance (pixels), lower is better"}[name], fontsize=9)
        axis.legend(fontsize=8)
    scatter = axes[-1]
    for name, (md, fidelity) in PAPER_RESULTS.items():
        scatter.scatter(md, fidelity, color="gray")
        scatter.annotate(name, (md, fidelity), fontsize=7, xytext=(3, 3), textcoords="offset points")
    overall = report["overall"]
    if overall.get("md") is not None and overall.get("if") is not None:
        scatter.scatter(overall["md"], overall["if"], color="tab:red", marker="*", s=150)
        scatter.annotate("this run", (overall["md"], overall["if"]), fontsize=8, color="tab:red",
                         xytext=(3, -10), textcoords="offset points")
    else:
        scatter.text(0.5, 0.5, "needs both IF and MD", transform=scatter.transAxes, ha="center", color="gray")
    scatter.set_xlabel("mean distance (lower is better)")
    scatter.set_ylabel("image fidelity (higher is better)")
    scatter.set_title("against the paper's figures", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(report: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2))
