"""Shared fixtures: one tiny random Stable Diffusion look-alike, loaded like a real checkpoint.

The tiny model is written in the diffusers folder layout by `tiny_models` (here, with the tests) and read
back through `dragwidget.load_model`, so every test exercises the same loading code as a real
SD 1.5 folder. Nothing here touches the user's ~/.cache or the network.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dragwidget import DragConfig, DragEditor, load_model
from tiny_models import build_tiny_model

# Settings the tiny model ships with (`dragwidget_settings.json`, read by load_model as
# "recommended settings"): 10 DDIM steps (strength 0.7 -> 7 inversion/denoising steps) and a
# LoRA batch of 1 keep each full edit at about a second on two CPU cores. The CLI picks them up too.
# The paper's method: most tests check the engine around the drag, and its at most 3 steps keep
# them short; tests/test_gooddrag.py covers the default method's own steps.
# GoodDrag prepares its image as the paper's method does here (strength 0.7, crop/flip LoRA views).
TINY_SETTINGS = {"num_inference_steps": 10, "lora_batch_size": 1, "method": "dragdiffusion",
                 "gooddrag_inversion_strength": 0.7, "gooddrag_lora_augment": True}
# What the session editor adds on top: a 2-step LoRA (for either method that trains one) and at most 3 drag steps.
EDITOR_CHANGES = {"lora_steps": 2, "gooddrag_lora_steps": 2, "max_drag_steps": 3}

# Tests that call the engine's modules directly (not through a DragEditor, which chooses its own
# thread count, as users get it) use one thread: the tiny model's tensors are far too small to gain
# from intra-op threads, and on a shared two-core machine spin-waiting made them up to 20x slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """DRAGWIDGET_CACHE points into a temporary folder for the whole session."""
    patcher = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("dragwidget_cache")
    patcher.setenv("DRAGWIDGET_CACHE", str(cache))
    torch.manual_seed(0)
    yield cache
    patcher.undo()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    folder = build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")
    (folder / "dragwidget_settings.json").write_text(json.dumps(TINY_SETTINGS))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The model behind the session editor: tests must not change its UNet behind the editor's back."""
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture
def fresh_model(tiny_model_dir):
    """A private copy (loading takes a fraction of a second) for tests that change the UNet."""
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def small_config(tiny_model):
    return DragConfig.from_dict(tiny_model.recommended_settings).replace(**EDITOR_CHANGES)


@pytest.fixture(scope="session")
def editor(tiny_model, small_config, tmp_path_factory):
    return DragEditor(tiny_model, config=small_config, cache_dir=tmp_path_factory.mktemp("editor_cache"))


def smooth_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful HxWx3 uint8 picture with a bright disc: content worth dragging."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    channels = [128 + 90 * np.sin(xs / (5 + 2 * i) + ys / (7 + i) + phases[i]) for i in range(3)]
    picture = np.stack(channels, axis=-1)
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    disc = (xs - cx) ** 2 + (ys - cy) ** 2 < (min(width, height) / 5) ** 2
    picture[disc] = (230, 40, 40)
    return np.clip(picture, 0, 255).astype(np.uint8)


@pytest.fixture
def make_image():
    return smooth_image


@pytest.fixture
def image_file(tmp_path):
    """Write a smooth test picture as PNG and return its path."""
    def write(width=50, height=37, seed=0, name="input.png"):
        path = tmp_path / name
        Image.fromarray(smooth_image(width, height, seed)).save(path)
        return path
    return write
