"""The LoRA disk cache: a damaged, unfit or unreadable entry is retrained and replaced, a folder
that cannot be written costs no edit, concurrent writers never collide, the size is bounded."""

import os
import threading
import warnings

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file

from dragwidget import DragEditor, InputError, load_model, lora_cache
from dragwidget.lora_cache import CacheWarning, cache_info, clear_cache, entry_metadata, load_lora, save_lora
from dragwidget.lora_finetuning import expected_lora_shapes
from conftest import smooth_image

PROMPT = "a red disc"
POINTS = [{"handle": [10, 12], "target": [30, 20]}]


@pytest.fixture(scope="module")
def clean(tiny_model_dir, small_config, tmp_path_factory):
    """A run with an empty cache: its entry's file name and bytes, its LoRA and its drag."""
    folder = tmp_path_factory.mktemp("clean_cache")
    editor = DragEditor(load_model(tiny_model_dir, device="cpu"), config=small_config, cache_dir=folder)
    picture = smooth_image(48, 40, seed=21)
    prepared = editor.prepare(picture, PROMPT)
    (entry,) = (folder / "lora").glob("*.safetensors")
    image = np.asarray(editor.drag(prepared, POINTS).image)
    return {"picture": picture, "name": entry.name, "bytes": entry.read_bytes(),
            "weights": prepared.lora_weights, "image": image}


def prepare_with(model, config, cache_dir, clean):
    """Prepare the clean run's picture; return it with the CacheWarnings raised meanwhile."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        editor = DragEditor(model, config=config, cache_dir=cache_dir)
        prepared = editor.prepare(clean["picture"], PROMPT)
    return editor, prepared, [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]


def assert_retrained_and_replaced(prepared, messages, entry, model, config, clean):
    assert prepared.lora_source == "trained"
    assert len(messages) == 1 and str(entry) in messages[0] and "training it again" in messages[0], messages
    assert all(torch.equal(prepared.lora_weights[k], w) for k, w in clean["weights"].items())
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # the new entry is fit: no warning
        assert load_lora(entry, model, config, expected_lora_shapes(model.unet, config)) is not None


def write_entry(cache_dir, clean, data: bytes):
    entry = cache_dir / "lora" / clean["name"]
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(data)
    return entry


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_damaged_entry_is_retrained_and_replaced(damage, fresh_model, small_config, tmp_path, clean):
    data = {"truncated": clean["bytes"][: len(clean["bytes"]) // 2], "empty": b"",
            "garbage": np.random.default_rng(0).bytes(5000)}[damage]
    entry = write_entry(tmp_path, clean, data)
    _, prepared, messages = prepare_with(fresh_model, small_config, tmp_path, clean)
    assert_retrained_and_replaced(prepared, messages, entry, fresh_model, small_config, clean)


@pytest.mark.parametrize("value", [float("nan"), 1e30])
def test_an_entry_with_absurd_values_is_retrained_not_drawn_black(value, fresh_model, small_config, tmp_path,
                                                                   clean):
    entry = write_entry(tmp_path, clean, b"")
    poisoned = {k: torch.full_like(w, value) for k, w in clean["weights"].items()}
    assert save_lora(poisoned, entry, fresh_model, small_config)  # well-formed, right keys and metadata
    editor, prepared, messages = prepare_with(fresh_model, small_config, tmp_path, clean)
    assert_retrained_and_replaced(prepared, messages, entry, fresh_model, small_config, clean)
    image = np.asarray(editor.drag(prepared, POINTS).image)
    assert image.max() > 0
    assert np.array_equal(image, clean["image"])


@pytest.mark.parametrize("unfit", ["empty dict", "half the keys", "wrong shapes", "integers", "other rank",
                                   "no metadata"])
def test_an_entry_unfit_for_this_model_and_settings_is_retrained(unfit, fresh_model, small_config, tmp_path,
                                                                 clean):
    entry = write_entry(tmp_path, clean, b"")
    weights = clean["weights"]
    metadata = entry_metadata(fresh_model, small_config, len(weights))  # claims to be the right entry
    if unfit == "empty dict":
        weights = {}
    elif unfit == "half the keys":
        weights = dict(list(weights.items())[::2])
    elif unfit == "wrong shapes":
        weights = {k: w[:-1] if "lora_A" in k else w for k, w in weights.items()}  # rank - 1 rows
    elif unfit == "integers":
        weights = {k: w.to(torch.int32) for k, w in weights.items()}
    elif unfit == "other rank":
        metadata = entry_metadata(fresh_model, small_config.replace(lora_rank=4), len(weights))
    else:
        metadata = None
    save_file(weights, str(entry), metadata=metadata)
    _, prepared, messages = prepare_with(fresh_model, small_config, tmp_path, clean)
    assert_retrained_and_replaced(prepared, messages, entry, fresh_model, small_config, clean)


def test_an_unreadable_entry_is_reported_as_unreadable_and_retrained(fresh_model, small_config, tmp_path, clean,
                                                                     monkeypatch):
    entry = write_entry(tmp_path, clean, clean["bytes"])
    real_open = lora_cache.safe_open

    def denied(path, *args, **kwargs):
        if os.fspath(path) == os.fspath(entry):
            # chmod 000 does not stop root, who runs these tests: refuse as the OS would.
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(lora_cache, "safe_open", denied)
    _, prepared, messages = prepare_with(fresh_model, small_config, tmp_path, clean)
    monkeypatch.setattr(lora_cache, "safe_open", real_open)
    assert_retrained_and_replaced(prepared, messages, entry, fresh_model, small_config, clean)
    assert "Permission denied" in messages[0] and "not found" not in messages[0].lower()


@pytest.mark.parametrize("blocked", ["cache folder", "lora folder"])
def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_edit(blocked, fresh_model, small_config, tmp_path,
                                                                     clean):
    cache_dir = tmp_path / "cache"
    if blocked == "cache folder":
        cache_dir.write_text("a file where the cache folder should be")
    else:
        cache_dir.mkdir()
        (cache_dir / "lora").write_text("a file where the LoRA folder should be")
    _, prepared, messages = prepare_with(fresh_model, small_config, cache_dir, clean)
    assert prepared.lora_source == "trained"
    assert all(torch.equal(prepared.lora_weights[k], w) for k, w in clean["weights"].items())
    assert len(messages) == 1 and "going on without caching" in messages[0], messages


def test_concurrent_saves_of_one_key_use_their_own_temporary_files(tiny_model, small_config, tmp_path, clean,
                                                                   monkeypatch):
    entry = tmp_path / "lora" / clean["name"]
    both_writing = threading.Barrier(2, timeout=30)
    written_to, results = [], []
    real_save = safetensors.torch.save_file

    def save_together(tensors, filename, metadata=None):
        written_to.append(filename)
        both_writing.wait()  # the two writers' files exist at the same time
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_together)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        writers = [threading.Thread(target=lambda: results.append(save_lora(clean["weights"], entry, tiny_model,
                                                                            small_config)))
                   for _ in range(2)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
    assert results == [True, True]
    assert len(set(written_to)) == 2
    assert [p.name for p in (tmp_path / "lora").iterdir()] == [entry.name]  # no temporary left behind
    loaded = load_lora(entry, tiny_model, small_config, expected_lora_shapes(tiny_model.unet, small_config))
    assert all(torch.equal(loaded[k], w) for k, w in clean["weights"].items())


def saved_entries(folder, names, model, config, weights, limit):
    for age, name in enumerate(names):
        path = folder / "lora" / f"{name}.safetensors"
        assert save_lora(weights, path, model, config, max_bytes=limit)
        os.utime(path, ns=(age * 10**9, age * 10**9))  # strictly ordered whatever the clock's resolution
    return sorted(p.stem for p in (folder / "lora").glob("*.safetensors"))


def test_eviction_keeps_the_most_recently_used_entries_within_the_limit(tiny_model, small_config, tmp_path, clean):
    size = len(clean["bytes"])
    limit = int(2.5 * size)
    kept = saved_entries(tmp_path, ["a", "b", "c", "d"], tiny_model, small_config, clean["weights"], limit)
    assert kept == ["c", "d"]

    # A hit makes an entry the most recently used: "c" survives the next save, "d" does not.
    expected = expected_lora_shapes(tiny_model.unet, small_config)
    assert load_lora(tmp_path / "lora" / "c.safetensors", tiny_model, small_config, expected) is not None
    assert save_lora(clean["weights"], tmp_path / "lora" / "e.safetensors", tiny_model, small_config, limit)
    assert sorted(p.stem for p in (tmp_path / "lora").glob("*.safetensors")) == ["c", "e"]


def test_size_limit_from_argument_or_environment(monkeypatch, tiny_model, small_config, tmp_path):
    monkeypatch.delenv(lora_cache.MAX_BYTES_VARIABLE, raising=False)
    assert lora_cache.max_cache_bytes() == 2_000_000_000
    assert lora_cache.max_cache_bytes("500MB") == 500_000_000
    assert lora_cache.max_cache_bytes("1.5 GiB") == 3 * 2**29
    assert lora_cache.max_cache_bytes(1234) == 1234
    monkeypatch.setenv(lora_cache.MAX_BYTES_VARIABLE, "20kb")
    assert lora_cache.max_cache_bytes() == 20_000
    monkeypatch.setenv(lora_cache.MAX_BYTES_VARIABLE, "lots")
    with pytest.raises(InputError, match="DRAGWIDGET_CACHE_MAX_BYTES='lots'.*500MB"):
        lora_cache.max_cache_bytes()
    with pytest.raises(InputError, match="cache_max_bytes=-1"):
        DragEditor(tiny_model, config=small_config, cache_dir=tmp_path, cache_max_bytes=-1)


def test_cache_info_and_clear(monkeypatch, tiny_model, small_config, tmp_path, clean):
    monkeypatch.setenv("DRAGWIDGET_CACHE", str(tmp_path))
    monkeypatch.setenv(lora_cache.MAX_BYTES_VARIABLE, "1GB")
    saved_entries(tmp_path, ["a", "b"], tiny_model, small_config, clean["weights"], None)
    (tmp_path / "lora" / ".a.left-by-a-killed-writer.tmp").write_bytes(b"x")
    info = cache_info()
    assert info == {"folder": str(tmp_path), "entries": 2, "bytes": 2 * len(clean["bytes"]),
                    "max_bytes": 1_000_000_000}
    assert cache_info(tmp_path) == info
    assert clear_cache() == 2
    assert list((tmp_path / "lora").iterdir()) == []
    assert cache_info(str(tmp_path))["entries"] == 0
    assert clear_cache(tmp_path / "never-created") == 0
