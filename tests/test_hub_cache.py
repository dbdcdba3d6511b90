"""Models named by a hub id and read offline from the Hugging Face cache, the fp16 weight variant,
and the command line's fast refusal of a model that is neither cached nor downloadable.

The hub cache is built here, in tmp_path, as `hf download` leaves it: `models--org--name/` with
the files' content in `blobs/`, `snapshots/<revision>/` linking to them in the repository's layout,
and `refs/main` naming the revision. huggingface_hub reads HF_HUB_CACHE, HF_HUB_OFFLINE and
HF_ENDPOINT once, at its import: in this process the `hub_cache` and `offline` fixtures set its
constants as well as the environment; child processes get the environment alone, as a user does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dragwidget import ModelNotFoundError, load_model, model_source
from dragwidget.loading import default_dtype, weights_variant
from tiny_models import build_tiny_model

REPO_ID = "org/name"
REVISION = "0123456789abcdef0123456789abcdef01234567"
WEIGHTED = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}
CLOSED_PORT = 9     # "discard": nothing listens there, a connection is refused at once
# Safetensors weight files as stable-diffusion-v1-5/stable-diffusion-v1-5 holds them (beside .bin, .ckpt, configs).
SD15_WEIGHTS = [f"{component}/{name}{variant}.safetensors"
                for component, name in WEIGHTED.items() for variant in ("", ".fp16")] + [
    "safety_checker/model.safetensors", "safety_checker/model.fp16.safetensors",
    "v1-5-pruned-emaonly.safetensors", "unet/diffusion_pytorch_model.non_ema.safetensors"]


def cache_repository(cache: Path, repo_id: str, *folders: Path) -> Path:
    """Put the files of `folders` (a later one adding to the earlier) into the hub cache `cache` as
    `repo_id` at REVISION, the way `hf download` stores them; return the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, blob)
            link = snapshot / path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)      # no newline: the revision is read verbatim
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache that huggingface_hub (and so diffusers and transformers) reads."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1; asking the hub anything fails the test."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(model_source, "hub_reachable", lambda: pytest.fail("HF_HUB_OFFLINE forbids a network check"))
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda *a, **k: pytest.fail("asked the hub for a listing"))


@pytest.fixture(scope="session")
def fp16_weights(tmp_path_factory):
    """Only the fp16 weight files (`unet/diffusion_pytorch_model.fp16.safetensors`, ...) of a tiny
    model whose weights differ from tiny_model_dir's (seed 1), as `save_pretrained(variant="fp16")`
    of diffusers and transformers writes them: a loaded weight then says which file it came from."""
    other = load_model(build_tiny_model(tmp_path_factory.mktemp("seed1") / "model", seed=1),
                       device="cpu", dtype=torch.float16)
    saved, weights = tmp_path_factory.mktemp("saved"), tmp_path_factory.mktemp("fp16_weights")
    for component, name in WEIGHTED.items():
        getattr(other, component).save_pretrained(saved / component, variant="fp16")
        (weights / component).mkdir()
        shutil.copyfile(saved / component / f"{name}.fp16.safetensors", weights / component / f"{name}.fp16.safetensors")
    return weights


def assert_weights_from(model, folder: Path, variant: str = "") -> None:
    """Every weight of the model's UNet, VAE and text encoder is the one stored in `folder`'s
    weight files of `variant` ("" for the full weights), in the model's dtype."""
    for component, name in WEIGHTED.items():
        loaded = getattr(model, component).state_dict()
        stored = load_file(folder / component / f"{name}{variant}.safetensors")
        assert stored, f"{component}: no weights stored"
        for key, tensor in stored.items():
            assert torch.equal(loaded[key], tensor.to(model.dtype)), f"{component}.{key} is not {folder.name}'s"


# ---------------------------------------------------------------- the cache, offline
def test_an_id_loads_from_the_cache_offline(hub_cache, offline, tiny_model_dir):
    cache_repository(hub_cache, REPO_ID, tiny_model_dir)
    model = load_model(REPO_ID, device="cpu")
    assert model.name == REPO_ID and model.dtype == torch.float32
    assert_weights_from(model, tiny_model_dir)
    assert model.recommended_settings == {}      # a hub model keeps the reference settings


def test_an_id_loads_from_the_cache_while_the_hub_is_unreachable(tmp_path, tiny_model_dir):
    """No HF_HUB_OFFLINE and the hub's address refusing connections (a fresh process, configured by
    the environment alone): every file comes from the cache. The connections tried are the
    reachability check and, once per process, huggingface_hub 2.x's fetch of its agent registry
    (made while it builds request headers, even for a file it then reads from the cache); asking
    the hub for the files would add one per file, and retries (tried: still retrying when stopped
    after 200 s)."""
    cache_repository(tmp_path / "hub", REPO_ID, tiny_model_dir)
    script = f"""
import socket
tried = []
connect = socket.socket.connect
def counting(self, address):
    tried.append(address)
    return connect(self, address)
socket.socket.connect = counting

from safetensors.torch import load_file
from dragwidget import load_model
model = load_model({REPO_ID!r}, device="cpu")
stored = load_file({str(tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors")!r})
print("same weights:", all(bool((model.unet.state_dict()[k] == t).all()) for k, t in stored.items()))
print("connections to the hub:", sum(address[1] == {CLOSED_PORT} for address in tried) <= 2)
"""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_CACHE=str(tmp_path / "hub"),
               HF_ENDPOINT=f"http://127.0.0.1:{CLOSED_PORT}")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "same weights: True" in done.stdout, done.stdout + done.stderr
    assert "connections to the hub: True" in done.stdout, done.stdout + done.stderr


def test_a_missing_vae_fails_before_the_checkpoint_is_read(hub_cache, offline, tiny_model_dir, monkeypatch):
    import diffusers

    monkeypatch.setattr(diffusers.UNet2DConditionModel, "from_pretrained",
                        lambda *a, **k: pytest.fail("read the UNet although the VAE cannot be had"))
    with pytest.raises(ModelNotFoundError,
                       match=r"(?s)with VAE 'org/vae': 'org/vae' is not in the local cache.*`hf download org/vae`"):
        load_model(tiny_model_dir, vae="org/vae", device="cpu")


# ---------------------------------------------------------------- the fp16 variant
@pytest.mark.parametrize("dtype,files,component,variant", [
    (default_dtype(torch.device("cuda")), SD15_WEIGHTS, "unet", "fp16"),           # CUDA's default: float16
    (default_dtype(torch.device("cuda")), SD15_WEIGHTS, "text_encoder", "fp16"),
    (default_dtype(torch.device("cpu")), SD15_WEIGHTS, "unet", None),               # float32: the full weights
    (torch.bfloat16, SD15_WEIGHTS, "vae", None),
    (torch.float16, ["unet/diffusion_pytorch_model.safetensors"], "unet", None),     # no fp16 files: the full ones
    (torch.float16, ["vae/diffusion_pytorch_model.fp16.safetensors"], "unet", None),  # another component's
    (torch.float16, ["unet/diffusion_pytorch_model.fp16.bin"], "unet", None),        # pickles are never read
    (torch.float16, ["unet_lora/diffusion_pytorch_model.fp16.safetensors"], "unet", None),
    (torch.float16, ["unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
                     "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors"], "unet", "fp16"),  # shards
    (torch.float16, ["diffusion_pytorch_model.fp16.safetensors", "config.json"], "", "fp16"),  # a VAE repository
    (torch.float16, ["vae/diffusion_pytorch_model.fp16.safetensors"], "", None),     # not at the root
])
def test_the_fp16_variant_is_read_in_float16_when_there_is_one(dtype, files, component, variant):
    assert weights_variant(dtype, files, component) == variant


@pytest.mark.parametrize("where", ["cache", "folder"])
def test_a_load_in_float16_reads_the_fp16_files_and_in_float32_the_full_ones(
        where, hub_cache, offline, tiny_model_dir, fp16_weights, tmp_path):
    if where == "cache":
        name = REPO_ID
        cache_repository(hub_cache, REPO_ID, tiny_model_dir, fp16_weights)
    else:
        name = shutil.copytree(tiny_model_dir, tmp_path / "model")
        shutil.copytree(fp16_weights, name, dirs_exist_ok=True)
    assert_weights_from(load_model(name, device="cpu", dtype=torch.float16), fp16_weights, ".fp16")
    assert_weights_from(load_model(name, device="cpu", dtype=torch.float32), tiny_model_dir)


def test_a_load_in_float16_without_fp16_files_reads_the_full_weights(hub_cache, offline, tiny_model_dir):
    cache_repository(hub_cache, REPO_ID, tiny_model_dir)
    assert_weights_from(load_model(REPO_ID, device="cpu", dtype=torch.float16), tiny_model_dir)


def test_the_files_of_an_id_come_from_the_cache_when_cached_and_from_the_hub_only_when_not(
        hub_cache, tiny_model_dir, monkeypatch):
    import huggingface_hub

    listed = []
    monkeypatch.setattr(model_source, "hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id: listed.append(repo_id) or SD15_WEIGHTS)
    cache_repository(hub_cache, REPO_ID, tiny_model_dir)
    cached = model_source.locate_model(REPO_ID)
    assert not cached.local_files_only           # online: the hub client may still update the cache
    assert "unet/diffusion_pytorch_model.safetensors" in model_source.repository_files(cached)
    assert listed == []
    elsewhere = model_source.locate_model("org/not-cached")
    assert elsewhere.folder is None
    assert model_source.repository_files(elsewhere) == tuple(SD15_WEIGHTS) and listed == ["org/not-cached"]


# ---------------------------------------------------------------- the command line, offline
@pytest.mark.parametrize("command", [
    ["edit", "IMAGE", "--points", "1,2,3,4", "--model", "org/unknown"],
    ["edit", "IMAGE", "--points", "1,2,3,4", "--model", "toy", "--vae", "org/unknown"],
    ["features", "IMAGE", "--model", "org/unknown", "--out", "OUT/features.png"],
    ["bench", "shapes", "--model", "org/unknown", "--out", "OUT/shapes"],
    ["bench", "dragbench", "--data", "OUT/data", "--model", "org/unknown", "--out", "OUT/dragbench"],
])
def test_an_unknown_model_offline_is_refused_before_the_engine_is_imported(command, image_file, tmp_path):
    (tmp_path / "data" / "cats" / "cat_1").mkdir(parents=True)           # a DragBench sample, as far as
    (tmp_path / "data" / "cats" / "cat_1" / "original_image.png").touch()  # finding one goes
    argv = [str(image_file(50, 37)) if part == "IMAGE" else part.replace("OUT", str(tmp_path)) for part in command]
    script = ("import sys\nfrom dragwidget import cli\n"
              f"code = cli.main({argv!r})\n"
              "print('engine imported:', [name for name in ('torch', 'diffusers') if name in sys.modules])\n"
              "sys.exit(code)")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), HF_HUB_CACHE=str(tmp_path / "hub"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "engine imported: []" in done.stdout, done.stdout + done.stderr
    [error] = done.stderr.splitlines()
    assert error.startswith("dragwidget: error: could not load model ")
    for fragment in ("'org/unknown' is not in the local cache and the hub is offline (HF_HUB_OFFLINE is set)",
                     "while online", "`hf download org/unknown`", "pass a local folder", "--model /path/to/folder"):
        assert fragment in error, error
