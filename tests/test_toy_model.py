"""The embedded `toy` model: it loads like any checkpoint, its captions steer what it draws, it inverts
faithfully, and a drag really moves things and keeps a drawn picture (short ShapesBench runs)."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dragwidget import DragEditor, load_model
from dragwidget.ddim_inversion import ddim_scheduler, drag_timestep_index, invert
from dragwidget.denoise_decode import decode, denoise
from dragwidget.encoding import encode_image, encode_prompt, image_to_tensor, tensor_to_image
from dragwidget.model_source import embedded_model_path
from dragwidget.toy.shapes import OBJECT_COLORS, Scene, SceneObject, render
from dragwidget.toy.shapes_bench import color_region, make_cases, psnr_outside, run_bench

pytestmark = pytest.mark.skipif(embedded_model_path("toy") is None,
                                reason="the embedded toy model is not in src/dragwidget/models/toy (run `dragwidget train-toy`)")


@pytest.fixture(scope="module")
def toy_editor():
    return DragEditor("toy", device="cpu")


def test_toy_loads_through_the_public_path(toy_editor):
    model = toy_editor.model
    assert model.name == "toy"
    assert model.native_width == 64
    assert type(model.unet).__name__ == "UNet2DConditionModel"
    assert model.unet.config.cross_attention_dim == model.text_encoder.config.hidden_size
    # the model's own recommended settings replace the SD defaults
    assert toy_editor.config.to_dict() != type(toy_editor.config)().to_dict()
    for key, value in model.recommended_settings.items():
        assert toy_editor.config.to_dict()[key] == value


def test_the_caption_steers_the_sample(toy_editor):
    """Version 3 draws captions weakly (its model card): the captioned colour shows in 5 of 20
    samples of four colours. What it does reliably is steer: over seeds 1-5, "a yellow disc" gave
    278 yellow pixels per sample and "a blue disc" none (the same seeds, the same noise)."""
    palette = [(128, 128, 128), *OBJECT_COLORS.values()]

    def yellow_pixels(color):
        samples = [np.asarray(toy_editor.generate(f"a {color} disc on a white background", seed=seed).image)
                   for seed in range(1, 6)]
        return np.mean([color_region(image, OBJECT_COLORS["yellow"], palette=palette).sum() for image in samples])

    assert yellow_pixels("yellow") > 100 and yellow_pixels("blue") < 40


def test_inversion_reconstructs_an_unseen_image(toy_editor):
    model = toy_editor.model
    config = toy_editor.config.replace(lora_steps=0)
    scene = Scene(64, "gradient", ("white", "grey"), 12345, (
        SceneObject("cross", "orange", (22.0, 24.0), 10.0, 0.3),
        SceneObject("disc", "blue", (44.0, 44.0), 9.0, 0.0)))
    image = render(scene)
    pixels = image_to_tensor(Image.fromarray(image), model.device)
    text = encode_prompt(model, scene.caption)
    inverted = invert(model, encode_image(model, pixels), text, config)
    scheduler = ddim_scheduler(model, config.replace(mutual_attention=False))
    clean = denoise(model, scheduler, drag_timestep_index(config), inverted, inverted, text,
                    config.replace(mutual_attention=False))
    reconstruction = np.asarray(tensor_to_image(decode(model, clean)))
    # measured 31.6 dB on this scene (32.4 dB on average over 12 unseen scenes, benchmarks/bench_toy_model.py)
    assert psnr_outside(reconstruction, image, np.zeros((64, 64), bool)) >= 29.0


def test_short_shapesbench_run_beats_no_edit(toy_editor, tmp_path):
    """Four cases with the model's recommended settings (LoRA included). Measured on the shipped
    model: mean relative distance 0.35 (per case 0.84, 0.23, 0.26, 0.07), IoU 0.45, PSNR outside
    the mask 33.1 dB, none of the 5 dragged objects lost; no edit gives 1.0. Each bar sits well
    clear of both the measurement and no edit."""
    cases = make_cases(4, seed=100)
    report = run_bench(toy_editor, cases, tmp_path)
    assert report["baseline"]["relative_distance"] == pytest.approx(1.0, abs=0.05)
    assert report["aggregate"]["relative_distance"] < 0.55
    assert report["aggregate"]["iou"] > max(0.3, report["baseline"]["iou"])
    assert report["aggregate"]["psnr_outside_mask"] > 29.0
    assert report["aggregate"]["lost_objects"] <= 1
    for case, row in zip(cases, report["cases"]):
        assert len(row["verdict_pairs"]) == len(case.pairs)
        assert row["reached"] == all(pair["reached"] for pair in row["verdict_pairs"])
        assert all(pair["drag_length"] > 0 and pair["appearance_error"] >= 0 for pair in row["verdict_pairs"])
    for case in cases:
        assert {p.name for p in (tmp_path / case.name).iterdir()} >= {"input.png", "result.png", "mask.png", "case.json"}
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "contact_sheet.png").is_file()


def test_short_run_on_drawn_pictures_keeps_them(toy_editor):
    """Four cases of ShapesBench's `drawn` family (colours and shapes the toy never trained on).
    Measured: background off by 2.6 grey levels outside the mask and 6.5 along the path (per case
    3.3, 10.2, 5.8, 6.6), none wrecked; mean relative distance 0.50, 1 of 4 objects lost."""
    report = run_bench(toy_editor, make_cases(4, seed=300, family="drawn"))
    aggregate = report["aggregate"]
    assert aggregate["wrecked"] == 0
    assert aggregate["background_error_outside"] <= 5.0 and aggregate["background_error_path"] <= 10.0
    assert aggregate["relative_distance"] < 0.8 and aggregate["lost_objects"] <= 2


def test_dragwidget_edit_moves_an_object_of_a_drawn_picture_and_keeps_the_picture(tmp_path, capsys):
    """What a newcomer does first: draw a picture in colours of their own (none of the scene
    generator's palette), mask the object's path and drag it with `dragwidget edit`, default settings."""
    from dragwidget import cli

    size, color = 128, np.array([240, 120, 100])            # a salmon ellipse on a mint-to-olive gradient
    ramp = np.linspace(0, 1, size)[None, :, None]
    background = (1 - ramp) * np.array([160, 230, 190]) + ramp * np.array([110, 110, 30])
    picture = Image.fromarray(np.repeat(background, size, axis=0).round().astype(np.uint8))
    cx, cy, rx, ry = 40, 70, 22, 16
    ImageDraw.Draw(picture).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(color))
    picture.save(tmp_path / "drawn.png")
    step = 24                                                 # 19 % of the width
    ys, xs = np.mgrid[0:size, 0:size]
    mask = (np.abs(ys - cy) <= ry + 10) & (xs >= cx - rx - 10) & (xs <= cx + step + rx + 10)
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    code = cli.main(["edit", str(tmp_path / "drawn.png"), "--model", "toy", "--prompt",
                     "a salmon ellipse on a mint to olive gradient background", "--points", f"{cx},{cy},{cx + step},{cy}",
                     "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "edited.png")])
    assert code == 0, capsys.readouterr().err
    original, edited = np.asarray(picture).astype(float), np.asarray(Image.open(tmp_path / "edited.png")).astype(float)

    before, after = color_region(original, color), color_region(edited, color)
    # Measured: the ellipse's colour over 1.18 times its area (smeared wider), its centre 27.6 px to the
    # right (of 24) and 1.3 px up; the background along the path off by 7.2 grey levels. Its shape is not kept (it arrives
    # as two lobes: model card), which this test does not claim.
    assert after.sum() >= 0.5 * before.sum()
    assert 0.5 * step <= xs[after].mean() - xs[before].mean() <= 1.5 * step
    assert abs(ys[after].mean() - ys[before].mean()) <= 4
    assert np.array_equal(edited[~mask], original[~mask])    # the CLI keeps the picture outside a drawn mask
    moved = np.zeros_like(mask)
    moved[cy - ry - 3:cy + ry + 4, cx - rx - 3:cx + step + rx + 4] = True
    assert np.abs(edited - original).mean(axis=-1)[mask & ~moved].mean() <= 8   # the background along the path
