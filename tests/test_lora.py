"""Identity LoRA: training changes the UNet, weights survive disk exactly, the cache is used."""

import numpy as np
import pytest
import torch
from PIL import Image

from dragwidget import DragEditor, load_model, lora_finetuning
from dragwidget.encoding import encode_prompt, image_to_tensor
from conftest import smooth_image
from dragwidget.lora_cache import load_lora, lora_cache_key, save_lora
from dragwidget.lora_finetuning import expected_lora_shapes, install_lora, train_identity_lora


def load_checked(path, model, config):
    return load_lora(path, model, config, expected_lora_shapes(model.unet, config))


def unet_output(model, seed=0):
    x = torch.randn(1, 4, 12, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.unet(x, 400, encoder_hidden_states=encode_prompt(model, "a red disc")).sample


@pytest.fixture(scope="module")
def trained(tiny_model_dir, small_config):
    """A LoRA trained for two steps on a 64x48 picture, still installed in a private model."""
    model = load_model(tiny_model_dir, device="cpu")
    pixels = image_to_tensor(Image.fromarray(smooth_image(64, 48, seed=1)), "cpu")
    weights = train_identity_lora(model, pixels, encode_prompt(model, "a red disc"), small_config)
    return model, weights


def test_training_produces_nonzero_update(trained):
    _, weights = trained
    b_matrices = [v for k, v in weights.items() if "lora_B" in k]
    assert b_matrices, sorted(weights)[:5]
    # peft starts B at zero: a trained LoRA has moved it.
    assert any(torch.count_nonzero(b) for b in b_matrices)
    assert all(v.device.type == "cpu" and not v.requires_grad for v in weights.values())


def test_save_load_round_trip_is_exact(trained, small_config, tmp_path):
    model, weights = trained
    path = tmp_path / "sub" / "weights.safetensors"
    assert save_lora(weights, path, model, small_config)
    loaded = load_checked(path, model, small_config)
    assert loaded.keys() == weights.keys()
    for key in weights:
        assert loaded[key].dtype == weights[key].dtype
        assert torch.equal(loaded[key], weights[key]), key
    assert not list(tmp_path.glob("sub/*.tmp"))  # written atomically, no temporary left behind


def test_loaded_weights_reproduce_the_trained_unet(trained, small_config, tiny_model_dir, tmp_path):
    model, weights = trained
    with_trained = unet_output(model)
    path = tmp_path / "weights.safetensors"
    save_lora(weights, path, model, small_config)

    # A different process: a freshly loaded model that never saw the training.
    other = load_model(tiny_model_dir, device="cpu")
    base = unet_output(other)
    assert (with_trained - base).abs().max() > 1e-4     # the LoRA matters ...
    install_lora(other.unet, load_checked(path, other, small_config), small_config)
    assert torch.equal(unet_output(other), with_trained)  # ... and comes back exactly

    # Switching the LoRA off and on again in the trained model.
    install_lora(model.unet, None, small_config)
    assert torch.equal(unet_output(model), base)
    install_lora(model.unet, load_checked(path, model, small_config), small_config)
    assert torch.equal(unet_output(model), with_trained)


def test_second_prepare_takes_the_lora_from_the_disk_cache(fresh_model, small_config, make_image, tmp_path,
                                                           monkeypatch):
    picture = make_image(50, 37, seed=2)
    first = DragEditor(fresh_model, config=small_config, cache_dir=tmp_path).prepare(picture, "a red disc")
    assert first.lora_source == "trained"
    assert len(list((tmp_path / "lora").glob("*.safetensors"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the LoRA was trained again instead of read from the cache")

    monkeypatch.setattr(lora_finetuning, "train_identity_lora", no_training)
    events = []
    second = DragEditor(fresh_model, config=small_config, cache_dir=str(tmp_path)).prepare(
        picture, "a red disc", progress=events.append)
    assert second.lora_source == "disk cache"
    assert any(e.stage == "lora" and e.cached for e in events)
    assert second.lora_weights.keys() == first.lora_weights.keys()
    assert all(torch.equal(second.lora_weights[k], first.lora_weights[k]) for k in first.lora_weights)
    # Same LoRA, same inversion.
    (key,) = first.inverted
    assert torch.equal(second.inverted[key], first.inverted[key])

    # Another prompt is another LoRA: with training disabled, preparing it must try to train.
    with pytest.raises(AssertionError, match="trained again"):
        DragEditor(fresh_model, config=small_config, cache_dir=tmp_path).prepare(picture, "a blue disc")


def test_cache_key_depends_on_everything_that_determines_the_lora(tiny_model, small_config, make_image):
    picture = make_image(64, 48, seed=3)
    key = lora_cache_key(tiny_model, picture, "a red disc", small_config)
    assert key == lora_cache_key(tiny_model, picture.copy(), "a red disc", small_config)  # stable
    changed_pixel = picture.copy()
    changed_pixel[10, 10, 0] ^= 1
    others = [
        lora_cache_key(tiny_model, picture, "a blue disc", small_config),
        lora_cache_key(tiny_model, changed_pixel, "a red disc", small_config),
        lora_cache_key(tiny_model, np.ascontiguousarray(picture[:, ::-1]), "a red disc", small_config),
        lora_cache_key(tiny_model, picture, "a red disc", small_config.replace(lora_steps=3)),
        lora_cache_key(tiny_model, picture, "a red disc", small_config.replace(lora_rank=4)),
        lora_cache_key(tiny_model, picture, "a red disc", small_config.replace(lora_seed=1)),
        lora_cache_key(tiny_model, picture, "a red disc", small_config.replace(lora_augment=False)),
    ]
    assert len({key, *others}) == len(others) + 1
    # Drag settings do not change the LoRA, so they must not change the key.
    assert key == lora_cache_key(tiny_model, picture, "a red disc", small_config.replace(max_drag_steps=7, seed=1))


@pytest.mark.parametrize("augment", [True, False])
def test_lora_views_are_augmented_or_the_untouched_image(augment, fresh_model, small_config, monkeypatch):
    pixels = image_to_tensor(Image.fromarray(smooth_image(64, 48, seed=2)), "cpu")
    seen = []
    encode = lora_finetuning.encode_image
    monkeypatch.setattr(lora_finetuning, "encode_image", lambda model, views, **kw: seen.append(views) or
                        encode(model, views, **kw))
    config = small_config.replace(lora_batch_size=2, lora_augment=augment)
    train_identity_lora(fresh_model, pixels, encode_prompt(fresh_model, "a red disc"), config)
    views = torch.cat(seen)
    assert views.shape == (2 * config.lora_steps, 3, 48, 64)
    untouched = [torch.equal(view, pixels[0]) for view in views]
    assert all(untouched) if not augment else not any(untouched)


def test_training_after_a_drag_without_lora_trains_again(fresh_model, small_config, make_image, tmp_path):
    """A prepare with 0 LoRA steps switches the adapter off; the next training must switch it on."""
    editor = DragEditor(fresh_model, config=small_config, cache_dir=tmp_path)
    editor.prepare(make_image(48, 40, seed=4), "a red disc")
    without = editor.prepare(make_image(48, 40, seed=5), "a red disc", config=small_config.replace(lora_steps=0))
    assert without.lora_weights is None
    again = editor.prepare(make_image(48, 40, seed=6), "a red disc")
    assert again.lora_source == "trained"
    assert any(v.abs().sum() > 0 for k, v in again.lora_weights.items() if "lora_B" in k)
