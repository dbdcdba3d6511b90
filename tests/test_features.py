"""Feature maps across inversion steps: the shared PCA basis, the step/timestep bookkeeping, the figure, the CLI."""

import numpy as np
import pytest
import torch
from PIL import Image

from dragwidget import DragEditor, DragRequest, InputError
from dragwidget.cli import main
from dragwidget.ddim_inversion import ddim_scheduler, drag_timestep_index, invert
from dragwidget.feature_maps import (
    DRAG_COLOUR, FeatureRequest, default_steps, feature_grid_figure, figure_png, fit_pca_basis, inversion_latents)
from dragwidget.unet_features import unet_with_features

from conftest import smooth_image

POINTS = [{"handle": [20, 30], "target": [28, 30]}]


# ------------------------------------------------------------------ the shared basis (no model needed)
def _two_timesteps(seed=0, channels=16, size=8):
    """Two feature maps that share one vector `v` (at different places) but differ everywhere else."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(channels, generator=g) * 3
    early = torch.randn(channels, size, size, generator=g)
    late = torch.randn(channels, size, size, generator=g) * 4 + 2  # other statistics entirely
    early[:, 1, 2] = v
    late[:, 5, 6] = v
    return torch.stack([early, late]), v


def test_same_feature_gets_the_same_colour_at_every_timestep():
    maps, _ = _two_timesteps()
    basis = fit_pca_basis(maps)
    rgb = basis.colours(maps)                                 # 2 x h x w x 3
    assert rgb.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(rgb[0, 1, 2], rgb[1, 5, 6], atol=1e-6)
    # one min/max for everything: each channel spans exactly [0, 1] over both maps together
    np.testing.assert_allclose(rgb.reshape(-1, 3).min(0), 0, atol=1e-6)
    np.testing.assert_allclose(rgb.reshape(-1, 3).max(0), 1, atol=1e-6)


def test_separate_bases_would_not_keep_the_colour():
    """The check above is meaningful: fitting each timestep on its own gives `v` two colours."""
    maps, _ = _two_timesteps()
    own = [fit_pca_basis(m[None]).colours(m[None])[0] for m in maps]
    assert np.abs(own[0][1, 2] - own[1][5, 6]).max() > 0.1


def test_basis_is_deterministic_and_sign_fixed():
    maps, _ = _two_timesteps(seed=3)
    first, second = fit_pca_basis(maps), fit_pca_basis(maps)
    torch.testing.assert_close(first.components, second.components)
    largest = first.components.gather(0, first.components.abs().argmax(0, keepdim=True))
    assert (largest > 0).all()
    # the components are the principal directions: orthonormal, and the first explains the most variance
    torch.testing.assert_close(first.components.T @ first.components, torch.eye(3), atol=1e-4, rtol=0)
    projected = first.project(maps).reshape(-1, 3)
    variances = projected.var(0)
    assert variances[0] >= variances[1] >= variances[2]


def test_fewer_than_three_channels_still_gives_rgb():
    maps = torch.randn(1, 2, 4, 4)
    rgb = fit_pca_basis(maps).colours(maps)
    assert rgb.shape == (1, 4, 4, 3) and np.isfinite(rgb).all()


# ------------------------------------------------------------------ extraction on the tiny model
@pytest.fixture(scope="module")
def feature_editor(tiny_model, small_config, tmp_path_factory):
    """This module's own editor on the shared tiny model (other tests' prepared images stay theirs)."""
    return DragEditor(tiny_model, config=small_config, cache_dir=tmp_path_factory.mktemp("features_cache"))


@pytest.fixture(scope="module")
def dragged(feature_editor):
    picture = Image.fromarray(smooth_image(64, 64, seed=5))
    prepared = feature_editor.prepare(picture, "a red disc")
    return picture, prepared, feature_editor.drag(prepared, POINTS)


@pytest.fixture(scope="module")
def maps(feature_editor, dragged):
    _, prepared, result = dragged
    return feature_editor.feature_maps(FeatureRequest(prepared=prepared, edited=result.image))


def test_shapes_labels_and_timesteps(feature_editor, maps):
    editor = feature_editor
    config = editor.config                                   # 10 DDIM steps, 7 inversion steps
    assert maps.steps == default_steps(config) == [2, 4, 6, 7, 8]
    scheduler = ddim_scheduler(editor.model, config)
    assert maps.timesteps == [int(scheduler.timesteps[10 - k]) for k in maps.steps] == [101, 301, 501, 601, 701]
    assert (maps.drag_block, maps.drag_step, maps.drag_timestep) == (2, 7, 601)
    assert maps.labels == ["original", "edited"] and maps.blocks == [1, 2, 3]
    assert maps.grid == (32, 32)                             # the drag's grid: half of 64x64
    for block in maps.blocks:
        channels = editor.model.unet.up_blocks[block].resnets[-1].conv2.out_channels
        assert maps.features[block].shape == (2, 5, channels, 32, 32)
        assert maps.rgb[block].shape == (2, 5, 32, 32, 3)
        assert maps.rgb[block].min() >= 0 and maps.rgb[block].max() <= 1
        # one basis for both pictures and all steps: recolouring everything with it gives the same
        np.testing.assert_array_equal(maps.rgb[block], maps.bases[block].colours(maps.features[block]))
        flat = maps.rgb[block].reshape(-1, 3)
        np.testing.assert_allclose(flat.min(0), 0, atol=1e-6)
        np.testing.assert_allclose(flat.max(0), 1, atol=1e-6)


def test_drag_block_and_step_are_the_features_the_drag_sees(feature_editor, dragged, maps):
    """Block 2 at step 7 of the original = the UNet features the optimisation starts from."""
    editor = feature_editor
    _, prepared, _ = dragged
    config = editor.config
    editor.use_prepared(prepared)
    latent = prepared.inverted[(config.num_inference_steps, config.inversion_steps)]
    timestep = ddim_scheduler(editor.model, config).timesteps[drag_timestep_index(config)]
    with torch.no_grad():
        _, expected = unet_with_features(editor.model.unet, latent, timestep, prepared.text_embedding, 2, (32, 32))
    torch.testing.assert_close(maps.feature(0, 2, 7), expected[0], atol=2e-3, rtol=2e-3)
    # and a neighbouring step is really another latent at another timestep
    assert (maps.feature(0, 2, 6) - expected[0]).abs().max() > 1e-2


def test_one_inversion_gives_every_intermediate_latent(tiny_model, small_config):
    latent = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    embedding = torch.zeros(1, 77, 32)
    kept = inversion_latents(tiny_model, latent, embedding, small_config, [1, 3, 6])
    for k in (1, 3, 6):
        alone = invert(tiny_model, latent, embedding, small_config.replace(inversion_strength=k / 10))
        torch.testing.assert_close(kept[k], alone, rtol=0, atol=0)


def test_image_prepared_by_a_run_is_reused(feature_editor, monkeypatch):
    """What the widget does: `run` a drag, then ask for the features of the same image and prompt."""
    picture = Image.fromarray(smooth_image(64, 64, seed=6))
    result = feature_editor.run(DragRequest(picture, POINTS, prompt="a blue disc"))
    monkeypatch.setattr(feature_editor, "prepare", lambda *a, **k: pytest.fail("prepared the image again"))
    maps = feature_editor.feature_maps(FeatureRequest.for_result(result, "a blue disc", steps=[7], blocks=[2]))
    assert maps.labels == ["original", "edited"] and maps.features[2].shape[:2] == (2, 1)
    assert maps.timings["prepare"] < 0.5
    np.testing.assert_array_equal(np.asarray(maps.images[1]), np.asarray(result.image))


def test_original_features_are_computed_once_per_prepared_image(feature_editor, dragged, monkeypatch):
    """After each drag the widget asks again: only the edited picture is new work."""
    import dragwidget.feature_maps as module

    _, prepared, result = dragged
    request = FeatureRequest(prepared=prepared, edited=result.image, steps=[3, 7], blocks=[2, 3])
    first = feature_editor.feature_maps(request)
    calls = []
    original = module.picture_features
    monkeypatch.setattr(module, "picture_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    second = feature_editor.feature_maps(request)
    assert len(calls) == 1                                   # the edited picture only
    for block in (2, 3):
        torch.testing.assert_close(second.features[block], first.features[block])


def test_same_picture_twice_gets_identical_colours(feature_editor, dragged):
    picture, _, _ = dragged
    maps = feature_editor.feature_maps(FeatureRequest(picture, "a red disc", edited=picture, steps=[4, 7], blocks=[2]))
    np.testing.assert_allclose(maps.rgb[2][0], maps.rgb[2][1], atol=1e-3)


def test_bad_steps_and_blocks_are_refused(feature_editor, dragged):
    _, prepared, _ = dragged
    for steps in ([0, 5], [11]):
        with pytest.raises(InputError, match="inversion-step counts between 1 and 10"):
            feature_editor.feature_maps(FeatureRequest(prepared=prepared, steps=steps))
    with pytest.raises(InputError, match="decoder block indices between 0 and 3"):
        feature_editor.feature_maps(FeatureRequest(prepared=prepared, blocks=[4]))
    with pytest.raises(InputError, match="needs an image"):
        feature_editor.feature_maps(FeatureRequest())


# ------------------------------------------------------------------ the figure
def _framed(ax):
    return all(s.get_edgecolor()[:3] == pytest.approx(_rgb(DRAG_COLOUR)) and s.get_linewidth() > 3
               for s in ax.spines.values())


def _rgb(hex_colour):
    return tuple(int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))


def test_figure_layout_and_marking(maps):
    figure = feature_grid_figure(maps)
    axes = np.array(figure.axes).reshape(6, 6)              # (3 blocks x 2 pictures) x (image + 5 steps)
    framed = [(r, c) for r in range(6) for c in range(6) if _framed(axes[r, c])]
    assert framed == [(2, 4), (3, 4)]                        # block 2 rows, step-7 column: original and edited
    assert axes[0, 4].get_title() == "step 7\nt=601 (drag)"
    assert axes[0, 1].get_title() == "step 2\nt=101"
    assert [axes[r, 0].get_ylabel() for r in range(6)] == [
        "block 1\noriginal", "block 1\nedited", "block 2\n(drag)\noriginal", "block 2\n(drag)\nedited",
        "block 3\noriginal", "block 3\nedited"]
    shown = axes[3, 2].get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), maps.rgb[2][1, 1])
    assert "block 2 at step 7 of 10 (t=601)" in figure._suptitle.get_text()
    png = figure_png(figure)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_without_the_drag_panel_says_so(maps):
    figure = feature_grid_figure(maps, blocks=[1, 3], show_images=False)
    assert len(figure.axes) == 4 * 5
    assert not any(_framed(ax) for ax in figure.axes)
    assert "not among the panels" in figure._suptitle.get_text()


# ------------------------------------------------------------------ the CLI
def test_cli_writes_the_figure(tiny_model_dir, image_file, tmp_path, capsys):
    image = image_file(64, 64)
    out = tmp_path / "pca.png"
    code = main(["features", str(image), "--model", str(tiny_model_dir), "--steps", "3,7", "--blocks", "2,3",
                 "--lora-steps", "0", "--edited", str(image), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "blocks [2, 3] x steps [3, 7] (t=[201, 601])" in printed and "block 2 at step 7" in printed
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width > 300


def test_cli_rejects_bad_lists(tiny_model_dir, image_file, capsys):
    image = image_file(64, 64)
    assert main(["features", str(image), "--model", str(tiny_model_dir), "--steps", "3,x"]) == 2
    assert "--steps expects comma-separated integers" in capsys.readouterr().err
    assert main(["features", str(image), "--model", str(tiny_model_dir), "--blocks", "7", "--lora-steps", "0"]) == 2
    assert "decoder block indices" in capsys.readouterr().err
