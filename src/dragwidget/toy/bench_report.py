"""ShapesBench's report: the tables the CLI prints of a run and of a sweep."""

from __future__ import annotations

from .shapes_bench import SHAPE_KEPT_IOU


def format_sweep(table: dict) -> str:
    lines = [f"{'setting':24s} {'value':>8s} {'worked':>7s} {'rel dist':>8s} {'IoU':>6s} {'PSNR out':>8s} {'lost':>7s} "
             f"{'s/edit':>7s}"]
    for row in table["rows"]:
        lost = f"{row['lost_objects']}/{row['dragged_objects']}"
        worked_cases = f"{row['worked']}/{row['cases']}"
        lines.append(f"{row['setting']:24s} {str(row['value']):>8s} {worked_cases:>7s} {row['relative_distance']:8.3f} "
                     f"{row['iou']:6.3f} {row['psnr_outside_mask']:8.2f} {lost:>7s} {row['seconds']:7.2f}")
    return "\n".join(lines)


def format_table(report: dict) -> str:
    lines = [f"{'':10s} {'dist px':>8s} {'rel dist':>8s} {'IoU':>6s} {'PSNR out':>8s} {'others':>7s} {'lost':>7s} "
             f"{'bg out':>6s} {'bg path':>7s} {'wrecked':>7s} {'s/edit':>7s}"]
    for label, row in (("drag", report["aggregate"]), ("no edit", report["baseline"])):
        lost = f"{row['lost_objects']}/{row['dragged_objects']}"
        lines.append(f"{label:10s} {row['distance_px']:8.2f} {row['relative_distance']:8.3f} {row['iou']:6.3f} "
                     f"{row['psnr_outside_mask']:8.2f} {row['others_stayed']:7.2f} {lost:>7s} "
                     f"{row['background_error_outside']:6.1f} {row['background_error_path']:7.1f} {row['wrecked']:7d} "
                     f"{row['seconds']:7.2f}")
    drag = report["aggregate"]
    lines.append(f"worked (arrived and kept its shape, IoU >= {SHAPE_KEPT_IOU:g}): {drag['worked']} of {drag['cases']}; "
                 f"arrived by position alone: {drag['arrived']} of {drag['cases']}")
    for kind, row in report["aggregate"]["by_kind"].items():
        lines.append(f"  {kind} ({row['cases']} cases): relative distance {row['relative_distance']:.3f}, IoU {row['iou']:.3f}")
    verdict = report["verdict"]
    lines.append(f"verdict agrees with the ground truth in {100 * verdict['agreement']:.0f} % of cases "
                 f"(said reached but failed: {verdict['said_reached_but_failed']}, said not reached but worked: "
                 f"{verdict['said_failed_but_worked']}); point tracking's belief agreed in "
                 f"{100 * verdict['tracker_agreement']:.0f} %")
    return "\n".join(lines)
