"""The correspondence explorer: cosine best match, and the widget's handlers called without a browser."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from dragwidget.locating import best_match, similarity_map
from dragwidget.widget.correspondence import CorrespondenceExplorer
from dragwidget.feature_maps import FeatureMaps, FeatureRequest, fit_pca_basis
from dragwidget.model_source import embedded_model_path


def _features(seed, channels=8, height=12, width=16):
    return torch.randn(channels, height, width, generator=torch.Generator().manual_seed(seed))


def test_best_match_follows_a_shift():
    a = _features(0)
    b = torch.roll(a, shifts=(2, -3), dims=(1, 2))           # content moved 3 left, 2 down
    match = best_match(a, b, (7, 4))
    assert match.point == (7, 4) and match.best == (4, 6)
    assert match.similarity == pytest.approx(1.0, abs=1e-5)
    assert match.heatmap.shape == (12, 16)


def test_similarity_map_is_cosine_similarity():
    a, b = _features(1), _features(2, height=6, width=5)    # B may have another size
    heat = similarity_map(a, b, (3.4, 2.6))                  # rounded to the cell (3, 3)
    query = a[:, 3, 3]
    expected = (b * query[:, None, None]).sum(0) / (b.norm(dim=0) * query.norm())
    np.testing.assert_allclose(heat, expected.numpy(), atol=1e-5)
    assert heat.shape == (6, 5) and heat.min() >= -1 and heat.max() <= 1
    # scaling a feature does not change its cosine similarity, and the query point clamps to the map
    np.testing.assert_allclose(similarity_map(a, 5 * b, (3, 3)), heat, atol=1e-5)
    assert best_match(a, b, (99, -4)).point == (15, 0)


def synthetic_maps(shift=(3, 1)):
    """FeatureMaps of two 48x32 pictures on a 24x16 grid; B's features are A's moved by `shift` cells."""
    features = {}
    for block in (1, 2):
        a = torch.stack([_features(10 * block + s, channels=6, height=16, width=24) for s in range(2)])
        b = torch.roll(a, shifts=(shift[1], shift[0]), dims=(-2, -1))
        features[block] = torch.stack([a, b]).half()
    bases = {k: fit_pca_basis(v) for k, v in features.items()}
    pictures = [Image.new("RGB", (48, 32), (200, 30, 30)), Image.new("RGB", (48, 32), (30, 30, 200))]
    return FeatureMaps(
        images=pictures, labels=["original", "edited"], steps=[30, 35], timesteps=[401, 301], blocks=[1, 2],
        features=features, rgb={k: bases[k].colours(v) for k, v in features.items()}, bases=bases,
        grid=(16, 24), drag_block=2, drag_step=35, drag_timestep=301, num_inference_steps=50)


def test_explorer_click_maps_canvas_pixels_to_the_feature_grid():
    explorer = CorrespondenceExplorer(synthetic_maps(), display_size=192)   # 48x32 shown 4x: 192x128 canvas
    assert explorer.canvas_size == (192, 128) and (explorer.block, explorer.step) == (2, 35)
    match = explorer.click_a(42, 70)          # canvas (42, 70) = picture (10.5, 17.5) = grid (5.25, 8.75)
    assert match.point == (5, 9)
    assert match.best == (8, 10)              # moved by (3, 1) cells
    assert explorer.match is match and match.similarity == pytest.approx(1.0, abs=1e-3)
    assert "A (10, 18) px &rarr; best match in B (16, 20) px" in explorer.readout.value
    assert "block 2, step 35 (t=301) (the drag's own)" in explorer.readout.value


def test_explorer_sliders_recompute_and_the_heatmap_is_drawn():
    maps = synthetic_maps()
    explorer = CorrespondenceExplorer(maps, display_size=192)
    explorer.click_a(100, 40)
    explorer.step_slider.value = 30           # what dragging the slider does
    assert explorer.step == 30
    expected = best_match(maps.feature(0, 2, 30), maps.feature(1, 2, 30), explorer.match.point)
    np.testing.assert_allclose(explorer.match.heatmap, expected.heatmap)
    explorer.block_slider.value = 1
    assert explorer.block == 1 and "block 1, step 30 (t=401)" in explorer.readout.value
    assert "drag's own" not in explorer.readout.value
    explorer.select(block=2, step=35)
    assert explorer.block_slider.value == 2 and explorer.step_slider.value == 35
    # B is drawn as the picture blended with the heatmap: hottest (bright) where the match is
    assert explorer.view_b.shape == (128, 192, 4) and (explorer.view_b[..., 3] == 255).all()
    bx, by = [int(v) for v in explorer.canvas_point(explorer.match.best)]
    brightness = explorer.view_b[..., :3].astype(float).sum(-1)
    assert brightness[by, bx] > np.percentile(brightness, 95)
    # A shows the picture itself; the PCA switch shows the block's colours instead
    assert tuple(explorer.view_a[0, 0, :3]) == (200, 30, 30)
    explorer.pca_toggle.value = True
    expected = (maps.rgb[2][0, 1, 0, 0] * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(explorer.view_a[0, 0, :3], expected)
    with pytest.raises(ValueError, match="was not extracted"):
        explorer.select(step=20)


# ------------------------------------------------------------------ on the embedded model
needs_toy = pytest.mark.skipif(embedded_model_path("toy") is None,
                               reason="the embedded toy model (src/dragwidget/models/toy) is not installed")


@needs_toy
def test_best_match_of_a_dragged_object_lands_on_it():
    """ShapesBench pair: drag an object with the toy model (no LoRA, to stay quick), click the
    handle on the original; the explorer's best match in the dragged image lies on that object.

    Taken on the first case whose drag kept the object whole and moved it toward its target (a drag
    that moved nothing would make the check trivial; one that destroyed the object, meaningless)."""
    from dragwidget import DragEditor, DragRequest
    from dragwidget.toy.shapes import object_masks
    from dragwidget.toy.shapes_bench import color_region, make_cases

    torch.manual_seed(0)
    editor = DragEditor("toy", device="cpu")
    config = editor.config.replace_for_method(method="gooddrag", lora_steps=0)   # a drag that reads 50 steps
    tried = []
    for case in [c for c in make_cases(12, seed=0) if len(c.pairs) == 1][:8]:
        pair = case.pairs[0]
        obj = case.scene.objects[pair["object"]]
        picture = Image.fromarray(case.image)
        result = editor.run(DragRequest(picture, case.pairs, case.mask, case.scene.caption, config))
        on_object = color_region(np.asarray(result.image), obj.rgb)
        ys, xs = np.nonzero(on_object)
        if len(xs) < 0.6 * object_masks(case.scene)[pair["object"]].sum():
            tried.append(f"{case.name}: less than 60 % of the object survived")
            continue
        now = (xs.mean(), ys.mean())
        length = math.dist(pair["handle"], pair["target"])
        if math.dist(now, pair["target"]) > math.dist(pair["handle"], pair["target"]) - 0.4 * length:
            tried.append(f"{case.name}: object did not move far enough toward the target")
            continue
        break
    else:
        pytest.fail(f"no drag moved its object: {tried}")

    maps = editor.feature_maps(FeatureRequest(picture, case.scene.caption, edited=result.image, config=config,
                                              steps=[config.inversion_steps], blocks=[config.feature_block]))
    explorer = CorrespondenceExplorer(maps)
    explorer.click_a(*(v * explorer.scale for v in pair["handle"]))
    bx, by = explorer.image_point(explorer.match.best, 1)
    x, y = int(round(bx)), int(round(by))
    near = on_object[max(0, y - 1):y + 2, max(0, x - 1):x + 2]   # one pixel of slack for the 2x grid
    assert near.any(), (f"{case.name}: best match {(bx, by)} is not on the {obj.color} {obj.shape} "
                        f"(now around {now}); handle {pair['handle']}, target {pair['target']}")
    # the match followed the object: nearer to where it went than to where it was
    assert math.dist((bx, by), now) < math.dist((bx, by), pair["handle"])
