"""ShapesBench: seeded drag cases on generated pictures, scored against exact ground truth.

Two families of pictures: `scenes` (the palette scenes of `shapes.py`, dragged by 8-40 % of the
image, some cases with two objects or two handles) and `drawn` (pictures drawn with PIL's
ImageDraw in arbitrary colours, `drawn_pictures.py`, 64 and 128 px, one object dragged by 8-22 %
of the width): the second says how the model does outside anything it was trained on. Because
every picture is parametric, the right answer is known: the object drawn again at its new place.
Metrics per case (pairs averaged):
  (a) distance between the dragged object's centroid in the result (found by its colour) and
      where the drag asked it to go, in pixels and relative to the drag length (no edit = 1.0);
  (b) IoU of the object's colour region in the result with its translated original silhouette
      (mean over the pairs; `shape_iou`, the lowest over the dragged objects);
  (c) PSNR outside the mask (capped at 100 dB for identical pixels);
  (d) the fraction of the other objects that stayed (colour region IoU >= 0.5 with their original);
  (e) dragged objects lost: found by their colour over less than 40 % of their area (recoloured,
      blurred into the background or shrunk); a lost object counts as not moved in (a);
  (f) background error in grey levels (mean absolute difference from the original over the
      channels), outside the mask and inside it away from the object; a picture whose background
      is off by more than `WRECKED_BACKGROUND_ERROR` in either region is counted as wrecked;
  (g) seconds per edit.
A drag *worked* when no dragged object was lost, their centroids landed within
`ARRIVED_DISTANCE` (0.3 of the drag length) of where they should be, and each kept its shape (IoU of the
moved silhouette >= `SHAPE_KEPT_IOU`): position and shape, never position alone. Aggregates count
the position successes and the successes with shape, and are also given per kind of case (one
pair, two objects, one object held by two handles).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .drawn_pictures import random_drawn_picture
from .shapes import IMAGE_SIZE, random_scene

COLOR_TOLERANCE = 70.0
PSNR_CAP = 100.0
LOST_AREA_FRACTION = 0.4
CASE_KINDS = ("one", "two_objects", "two_handles")
FAMILIES = ("scenes", "drawn")
DRAWN_SIZES = (64, 128)
WRECKED_BACKGROUND_ERROR = 25.0
SHAPE_KEPT_IOU = 0.5
ARRIVED_DISTANCE = 0.3   # the ground truth's tolerance, a fraction of the drag length (not the verdict's)


@dataclass
class DragCase:
    name: str
    scene: object                  # a shapes.Scene or a drawn_pictures.DrawnPicture
    moves: Dict[int, tuple]        # object index -> (dx, dy)
    pairs: List[dict]              # {"handle": [x, y], "target": [x, y], "object": index}
    mask: np.ndarray               # bool, True = editable
    kind: str = "one"              # one of CASE_KINDS
    family: str = "scenes"         # one of FAMILIES

    @property
    def image(self) -> np.ndarray:
        return self.scene.render()

    @property
    def expected_scene(self):
        scene = self.scene
        for index, (dx, dy) in self.moves.items():
            scene = scene.with_object(index, scene.objects[index].moved(dx, dy))
        return scene

    def to_dict(self) -> dict:
        masks = self.scene.object_masks()
        return {
            "name": self.name, "kind": self.kind, "family": self.family, "caption": self.scene.caption,
            "objects": [{**obj.to_dict(), "centroid": list(centroid(m))} for obj, m in zip(self.scene.objects, masks)],
            "pairs": self.pairs,
            "moves": {str(k): list(v) for k, v in self.moves.items()},
        }


def centroid(mask: np.ndarray) -> tuple:
    ys, xs = np.nonzero(mask)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else (float("nan"), float("nan"))


def on_object(mask: np.ndarray, point: tuple) -> tuple:
    """`point` if it lies on the object, else the object's pixel nearest to it (a ring's centroid
    is in its hole, and a handle there would drag the background)."""
    x, y = point
    if mask[round(y), round(x)]:
        return point
    ys, xs = np.nonzero(mask)
    nearest = int(np.argmin((xs - x) ** 2 + (ys - y) ** 2))
    return float(xs[nearest]), float(ys[nearest])


def color_region(image: np.ndarray, rgb: Sequence[int], palette: Sequence[Sequence[int]] = (),
                 tolerance: float = COLOR_TOLERANCE) -> np.ndarray:
    """Pixels within `tolerance` of `rgb` and nearer to it than to any other colour of `palette`
    (the scene's other colours), so that anti-aliased edges of a neighbour don't count."""
    pixels = image.astype(np.float32)
    distance = np.linalg.norm(pixels - np.asarray(rgb, dtype=np.float32), axis=-1)
    region = distance < tolerance
    for other in palette:
        if tuple(other) != tuple(rgb):
            region &= distance <= np.linalg.norm(pixels - np.asarray(other, dtype=np.float32), axis=-1)
    return region


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def psnr_outside(result: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    outside = ~mask
    if not outside.any():
        return PSNR_CAP
    error = ((result.astype(np.float64) - reference.astype(np.float64)) ** 2)[outside].mean()
    return PSNR_CAP if error == 0 else min(PSNR_CAP, 10 * math.log10(255.0 ** 2 / error))


def grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * pixels + 1))) > 0


def background_errors(original: np.ndarray, result: np.ndarray, mask: np.ndarray, object_masks) -> tuple:
    """Mean absolute error in grey levels outside the mask, and inside it away from every object
    (where it was and where it should be, grown by 2 px per 64), where the original's background must stay."""
    difference = np.abs(result.astype(np.float32) - original.astype(np.float32)).mean(axis=-1)
    objects = np.zeros(mask.shape, dtype=bool)
    for object_mask in object_masks:
        objects |= object_mask
    away = mask & ~grown(objects, max(1, round(2 * mask.shape[1] / IMAGE_SIZE)))
    outside = float(difference[~mask].mean()) if (~mask).any() else 0.0
    return outside, float(difference[away].mean()) if away.any() else 0.0


def score(case: DragCase, result: np.ndarray, seconds: float = 0.0) -> dict:
    """The metrics of one edited image against the case's ground truth."""
    original = case.image
    expected_masks = case.expected_scene.object_masks()
    original_masks = case.scene.object_masks()
    palette = case.scene.palette
    found = {index: color_region(result, case.scene.objects[index].rgb, palette) for index in case.moves}
    lost = {index: found[index].sum() < LOST_AREA_FRACTION * expected_masks[index].sum() for index in case.moves}
    distances, relative, ious = [], [], []
    for pair in case.pairs:
        index = pair["object"]
        dx, dy = case.moves[index]
        expected = np.add(centroid(original_masks[index]), (dx, dy))
        length = math.hypot(dx, dy)
        # A lost object is scored as if it had not moved: where its remnants sit says nothing.
        distance = length if lost[index] else float(np.hypot(*(np.asarray(centroid(found[index])) - expected)))
        distances.append(distance)
        relative.append(distance / length)
        ious.append(iou(found[index], expected_masks[index]))
    others = [i for i in range(len(case.scene.objects)) if i not in case.moves]
    stayed = [iou(color_region(result, case.scene.objects[i].rgb, palette), original_masks[i]) >= 0.5 for i in others]
    outside, along_path = background_errors(original, result, case.mask, (*original_masks, *expected_masks))
    return {
        "distance_px": float(np.mean(distances)),
        "relative_distance": float(np.mean(relative)),
        "iou": float(np.mean(ious)),
        "shape_iou": min(iou(found[index], expected_masks[index]) for index in case.moves),
        "psnr_outside_mask": psnr_outside(result, original, case.mask),
        "others_stayed": float(np.mean(stayed)) if stayed else 1.0,
        "dragged_objects": len(case.moves),
        "lost_objects": int(sum(lost.values())),
        "background_error_outside": outside,
        "background_error_path": along_path,
        "wrecked": max(outside, along_path) > WRECKED_BACKGROUND_ERROR,
        "seconds": seconds,
    }


def _path_mask(scene, index: int, dx: float, dy: float) -> np.ndarray:
    """Everything the object covers on its way, grown by 3 pixels per 64."""
    obj = scene.objects[index]
    swept = np.zeros((scene.size, scene.size), dtype=bool)
    for fraction in np.linspace(0, 1, 9):
        swept |= scene.coverage(obj.moved(dx * fraction, dy * fraction)) > 0
    return grown(swept, round(3 * scene.size / IMAGE_SIZE))


def _try_move(rng, scene, index: int, lengths: tuple = (0.08, 0.40)):
    """A translation of `lengths` (fractions of the image) keeping the object inside and clear of the others."""
    size = scene.size
    obj = scene.objects[index]
    for _ in range(100):
        length = rng.uniform(*lengths) * size
        angle = rng.uniform(0, 2 * math.pi)
        dx, dy = length * math.cos(angle), length * math.sin(angle)
        cx, cy = obj.center[0] + dx, obj.center[1] + dy
        if not (obj.radius + 1 <= cx <= size - 2 - obj.radius and obj.radius + 1 <= cy <= size - 2 - obj.radius):
            continue
        clear = all(math.dist((cx, cy), other.center) > obj.radius + other.radius + 2
                    for j, other in enumerate(scene.objects) if j != index)
        if clear:
            return dx, dy
    return None


def make_cases(count: int, seed: int = 0, size: int = IMAGE_SIZE, family: str = "scenes") -> List[DragCase]:
    """Seeded cases. `scenes`: mostly one pair; some drag two objects, some hold one object by two
    handles. `drawn`: one object of a drawn picture, alternately 64 and 128 px (`size` unused)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown ShapesBench family {family!r}; choose one of {', '.join(FAMILIES)}")
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        if family == "drawn":
            kind, lengths = "one", (0.08, 0.22)
            scene = random_drawn_picture(rng, DRAWN_SIZES[len(cases) % len(DRAWN_SIZES)])
        else:
            kind, lengths = rng.choice(["one", "two_objects", "two_handles"], p=[0.6, 0.25, 0.15]), (0.08, 0.40)
            scene = random_scene(rng, size, max_objects=3)
        if kind == "two_objects" and len(scene.objects) < 2:
            continue
        dragged = [0, 1] if kind == "two_objects" else [int(rng.integers(len(scene.objects)))]
        moves = {}
        for index in dragged:
            move = _try_move(rng, scene, index, lengths)
            if move is None:
                break
            moves[index] = move
        if len(moves) != len(dragged):
            continue
        if kind == "two_objects":  # the two moved objects must not land on each other
            a, b = (scene.objects[i].moved(*moves[i]) for i in dragged)
            if math.dist(a.center, b.center) <= a.radius + b.radius + 2:
                continue
        masks = scene.object_masks()
        pairs = []
        for index, (dx, dy) in moves.items():
            cx, cy = on_object(masks[index], centroid(masks[index]))
            handles = [(cx, cy)]
            if kind == "two_handles":
                offset = scene.objects[index].radius * 0.35
                handles = [(cx - offset, cy), (cx + offset, cy)]
            for hx, hy in handles:
                pairs.append({"handle": [round(hx, 1), round(hy, 1)],
                              "target": [round(hx + dx, 1), round(hy + dy, 1)], "object": index})
        mask = np.zeros((scene.size, scene.size), dtype=bool)
        for index, (dx, dy) in moves.items():
            mask |= _path_mask(scene, index, dx, dy)
        cases.append(DragCase(f"case_{len(cases):03d}", scene, moves, pairs, mask, str(kind), family))
    return cases


MEAN_KEYS = ("distance_px", "relative_distance", "iou", "psnr_outside_mask", "others_stayed",
             "background_error_outside", "background_error_path", "seconds")


def arrived(row: dict) -> bool:
    """Position alone: no dragged object lost, and the objects' centroids within ARRIVED_DISTANCE of
    the drag length of where they should be."""
    return row["lost_objects"] == 0 and row["relative_distance"] <= ARRIVED_DISTANCE


def worked(row: dict) -> bool:
    """The ground truth the verdict is checked against: the objects arrived (`arrived`) and each kept
    its shape (IoU of its moved original silhouette with its region in the result >= SHAPE_KEPT_IOU)."""
    return arrived(row) and row["shape_iou"] >= SHAPE_KEPT_IOU


def verdict_agreement(rows: List[dict]) -> dict:
    """How often the verdict (`reached`) says what the ground truth (`worked`) says, and how it errs."""
    return {"agreement": float(np.mean([row["reached"] == row["worked"] for row in rows])),
            "said_reached_but_failed": int(sum(row["reached"] and not row["worked"] for row in rows)),
            "said_failed_but_worked": int(sum(row["worked"] and not row["reached"] for row in rows)),
            "tracker_agreement": float(np.mean([row["tracker_reached"] == row["worked"] for row in rows]))}


def aggregate(rows: List[dict]) -> dict:
    """Means over the cases, lost objects counted, and the relative distance per kind of case."""
    summary = {key: float(np.mean([row[key] for row in rows])) for key in MEAN_KEYS}
    summary["relative_distance_median"] = float(np.median([row["relative_distance"] for row in rows]))
    summary["dragged_objects"] = int(sum(row["dragged_objects"] for row in rows))
    summary["lost_objects"] = int(sum(row["lost_objects"] for row in rows))
    summary["wrecked"] = int(sum(row["wrecked"] for row in rows))
    if rows and "worked" in rows[0]:
        summary["cases"] = len(rows)
        summary["arrived"] = int(sum(row["arrived"] for row in rows))
        summary["worked"] = int(sum(row["worked"] for row in rows))
        summary["said_reached_worked"] = int(sum(row["reached"] and row["worked"] for row in rows))
        summary["said_reached_failed"] = int(sum(row["reached"] and not row["worked"] for row in rows))
    summary["by_kind"] = {
        kind: {"cases": len(of_kind), "relative_distance": float(np.mean([row["relative_distance"] for row in of_kind])),
               "iou": float(np.mean([row["iou"] for row in of_kind]))}
        for kind in CASE_KINDS if (of_kind := [row for row in rows if row["kind"] == kind])}
    return summary


def draw_points(image: np.ndarray, pairs: List[dict], scale: Optional[int] = None) -> Image.Image:
    """The picture enlarged to 256 px (64-px pictures 4 times) with its pairs drawn on it."""
    scale = scale or max(1, 256 // image.shape[1])
    picture = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    pen = ImageDraw.Draw(picture)
    for pair in pairs:
        (hx, hy), (tx, ty) = [(v * scale + scale / 2 for v in p) for p in (pair["handle"], pair["target"])]
        pen.line([(hx, hy), (tx, ty)], fill=(255, 255, 255), width=2)
        pen.ellipse([hx - 4, hy - 4, hx + 4, hy + 4], fill=(230, 30, 30), outline=(255, 255, 255))
        pen.ellipse([tx - 4, ty - 4, tx + 4, ty + 4], fill=(30, 60, 230), outline=(255, 255, 255))
    return picture


def run_bench(editor, cases: List[DragCase], out: Optional[Path] = None, config=None,
              on_case: Optional[Callable[[int, int, dict], None]] = None) -> dict:
    """Edit every case with `editor` (a DragEditor); return {"aggregate", "baseline", "cases"}."""
    from ..api import DragRequest

    rows, baseline_rows, sheet = [], [], []
    for number, case in enumerate(cases):
        image = case.image
        started = time.perf_counter()
        result = editor.run(DragRequest(Image.fromarray(image), case.pairs, case.mask, case.scene.caption, config))
        seconds = time.perf_counter() - started
        edited = np.asarray(result.image)
        row = {"name": case.name, "kind": case.kind, **score(case, edited, seconds),
               "final_handles": [list(h) for h in result.handles], "steps": result.steps,
               "reached": result.reached, "tracker_reached": result.tracker_reached, "verdict": result.says,
               # what the verdict measured per pair, so its thresholds can be fitted to `worked` afterwards
               "verdict_pairs": [pair.to_dict() for pair in result.verdict.pairs]}
        row["arrived"], row["worked"] = arrived(row), worked(row)
        rows.append(row)
        baseline_rows.append({"kind": case.kind, **score(case, image)})
        sheet.append((draw_points(image, case.pairs), draw_points(edited, case.pairs)))
        if out is not None:
            folder = out / case.name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / "input.png")
            result.image.save(folder / "result.png")
            Image.fromarray(case.mask.astype(np.uint8) * 255).save(folder / "mask.png")
            (folder / "case.json").write_text(json.dumps({**case.to_dict(), "metrics": row}, indent=2))
        if on_case is not None:
            on_case(number + 1, len(cases), row)
    report = {"aggregate": aggregate(rows), "baseline": aggregate(baseline_rows), "verdict": verdict_agreement(rows),
              "cases": rows,
              "config": (config or editor.config).to_dict()}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(report, indent=2))
        contact_sheet(sheet).save(out / "contact_sheet.png")
    return report


def run_sweep(editor, cases: List[DragCase], sweeps: Dict[str, list], config=None,
              on_case: Optional[Callable[[int, int, dict], None]] = None,
              on_row: Optional[Callable[[dict], None]] = None) -> dict:
    """One row per (setting, value): every case edited with `config` (default: the editor's) where
    that one setting takes that value. A configuration met twice (the base value of each sweep) runs once."""
    base = config or editor.config
    finished: Dict[str, dict] = {}
    rows = []
    for setting, values in sweeps.items():
        for value in values:
            varied = base.replace_for_method(**{setting: value})
            key = json.dumps(varied.to_dict(), sort_keys=True)
            if key not in finished:
                report = run_bench(editor, cases, config=varied, on_case=on_case)
                # per case too: on 20 cases the spread says which differences are noise
                finished[key] = {**report["aggregate"],
                                 "case_relative_distance": [row["relative_distance"] for row in report["cases"]]}
            row = {"setting": setting, "value": value, **finished[key]}
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return {"cases": len(cases), "config": base.to_dict(), "rows": rows}


def contact_sheet(pairs_of_pictures, columns: int = 4) -> Image.Image:
    if not pairs_of_pictures:
        return Image.new("RGB", (1, 1))
    width, height = pairs_of_pictures[0][0].size
    rows = math.ceil(len(pairs_of_pictures) / columns)
    sheet = Image.new("RGB", (columns * (2 * width + 8), rows * (height + 8)), (255, 255, 255))
    for i, (before, after) in enumerate(pairs_of_pictures):
        x, y = (i % columns) * (2 * width + 8), (i // columns) * (height + 8)
        sheet.paste(before, (x, y))
        sheet.paste(after, (x + width, y))
    return sheet
