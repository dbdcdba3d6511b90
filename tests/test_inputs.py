"""What the user gives: images, points, masks and model names, good and bad (API level)."""

import math

import numpy as np
import pytest
from PIL import Image

from dragwidget import InputError, ModelNotFoundError, PointPair, load_model
from dragwidget.image_input import load_image, load_mask, normalise_points, parse_points_text, working_size

ORIENTATION = 0x0112


# ------------------------------------------------------------------ images
def test_missing_image_file(tmp_path):
    with pytest.raises(InputError, match="image file not found: .*nothere.png"):
        load_image(tmp_path / "nothere.png")


def test_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels")
    with pytest.raises(InputError, match="notes.png is not an image that Pillow can read"):
        load_image(path)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[:, :4, 3] = 0        # transparent
    rgba[:, 4:8, 3] = 128     # half
    rgba[:, 8:, 3] = 255      # opaque
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    for source in (path, rgba, Image.fromarray(rgba, "RGBA")):
        picture = load_image(source)
        assert picture.mode == "RGB" and picture.size == (12, 10)
        array = np.asarray(picture).astype(int)
        assert (array[:, :4] == 255).all()
        assert (array[:, 8:] == (10, 200, 30)).all()
        expected = np.round(np.array([10, 200, 30]) * 128 / 255 + 255 * 127 / 255)
        assert np.abs(array[:, 4:8] - expected).max() <= 1


def test_palette_image_with_transparency_is_composited(tmp_path):
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (4, 0, 8, 8))
    palette.info["transparency"] = 0
    path = tmp_path / "palette.png"
    palette.save(path, transparency=0)
    array = np.asarray(load_image(path))
    assert (array[:, :4] == 255).all() and (array[:, 4:] == (255, 0, 0)).all()


def test_greyscale_becomes_rgb(tmp_path):
    grey = np.tile(np.arange(0, 240, 20, dtype=np.uint8), (9, 1))  # 9x12 ramp
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    for source in (path, grey, grey[..., None]):
        picture = load_image(source)
        assert picture.mode == "RGB" and picture.size == (12, 9)
        array = np.asarray(picture)
        for channel in range(3):
            assert np.array_equal(array[..., channel], grey)


def test_float_arrays_in_unit_range_are_scaled():
    array = np.full((8, 8, 3), 0.5, dtype=np.float32)
    assert (np.asarray(load_image(array)) == 128).all()


def exif_rotated(path, stored_size=(40, 60), orientation=6):
    """Save an image whose pixels are stored `stored_size` but that displays rotated."""
    stored = np.zeros((stored_size[1], stored_size[0], 3), dtype=np.uint8)
    stored[:12, :12] = (255, 0, 0)          # a red mark in the stored top-left corner
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[ORIENTATION] = orientation
    image.save(path, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(tmp_path, suffix):
    path = exif_rotated(tmp_path / f"rotated{suffix}")
    with Image.open(path) as raw:
        assert raw.size == (40, 60) and raw.getexif()[ORIENTATION] == 6
    picture = load_image(path)
    # Orientation 6 = "rotate 90 degrees clockwise to display": 40x60 stored -> 60x40 shown,
    # and the stored top-left corner is displayed top-right.
    assert picture.size == (60, 40)
    array = np.asarray(picture).astype(int)
    red = array[3:9, -9:-3]                           # inside the mark, clear of JPEG's blurred edges
    assert (red[..., 0] > 200).all() and (red[..., 1:] < 60).all()
    assert (array[3:9, 3:9] < 60).all()
    with Image.open(path) as opened:                  # an opened PIL image is handled the same way
        assert load_image(opened).size == (60, 40)
    # Points are checked against the displayed size: x = 55 exists only in the rotated view.
    assert normalise_points("55,10,50,30", *picture.size)


def test_tiny_image_is_rejected():
    with pytest.raises(InputError, match="at least 8x8"):
        load_image(np.zeros((5, 20, 3), dtype=np.uint8))


def test_bad_array_shape_is_rejected():
    with pytest.raises(InputError, match="HxW, HxWx3 or HxWx4"):
        load_image(np.zeros((8, 8, 2), dtype=np.uint8))


@pytest.mark.parametrize("width,height", [(50, 37), (37, 50), (511, 300), (1000, 999), (64, 64)])
def test_working_size_is_a_multiple_of_8_with_the_aspect_ratio(width, height):
    new_width, new_height = working_size(width, height, 512, 8)
    assert new_width == 512 and new_height % 8 == 0
    assert abs(new_height - 512 * height / width) <= 4     # nearest multiple of 8


# ------------------------------------------------------------------ points
def test_points_in_every_accepted_form_agree():
    expected = [PointPair((10.0, 20.0), (30.0, 20.0)), PointPair((5.0, 6.0), (7.0, 8.0))]
    forms = [
        "10,20,30,20;5,6,7,8",
        " 10, 20 ,30,20 ; 5,6,7,8 ; ",
        [{"handle": [10, 20], "target": [30, 20]}, {"handle": (5, 6), "target": (7, 8)}],
        [((10, 20), (30, 20)), ((5, 6), (7, 8))],
        [[10, 20], [30, 20], [5, 6], [7, 8]],           # DragBench's flat alternating list
        np.array([[10, 20], [30, 20], [5, 6], [7, 8]]),
        expected,
    ]
    for form in forms:
        assert normalise_points(form, 50, 37) == expected, form


def test_point_outside_the_image():
    with pytest.raises(InputError, match=r"pair 1: target \(50, 20\) is outside the 50x37 image \(x must be in 0..49"):
        normalise_points("10,20,50,20", 50, 37)
    with pytest.raises(InputError, match=r"pair 2: handle \(3, -1\) is outside"):
        normalise_points("10,20,30,20;3,-1,4,4", 50, 37)
    assert normalise_points("0,0,49,36", 50, 37)    # the last pixel is inside


def test_odd_number_of_coordinates():
    with pytest.raises(InputError, match="got 3 numbers; each pair needs 4"):
        parse_points_text("1,2,3")
    with pytest.raises(InputError, match="got 6 numbers"):
        normalise_points("1,2,3,4;5,6", 50, 37)
    with pytest.raises(InputError, match="alternates handle and target, but has 3 points"):
        normalise_points([[1, 2], [3, 4], [5, 6]], 50, 37)


@pytest.mark.parametrize("points", ["", " ; ", []])
def test_zero_pairs(points):
    with pytest.raises(InputError, match="no point pairs given"):
        normalise_points(points, 50, 37)


def test_handle_equal_to_target():
    with pytest.raises(InputError, match=r"pair 1: handle and target are the same point \(10, 10\)"):
        normalise_points("10,10,10,10", 50, 37)


def test_points_that_are_not_numbers():
    with pytest.raises(InputError, match="'x' is not a number"):
        normalise_points("1,2,x,4", 50, 37)
    with pytest.raises(InputError, match="not a finite point"):
        normalise_points([((math.nan, 1), (2, 3))], 50, 37)
    with pytest.raises(InputError, match="point pair 1 .* is not understood"):
        normalise_points([{"handle": [1, 2]}], 50, 37)


# ------------------------------------------------------------------ masks
def test_empty_mask_means_no_mask():
    assert load_mask(None, 20, 10) is None
    assert load_mask(np.zeros((10, 20), dtype=np.uint8), 20, 10) is None
    assert load_mask(Image.new("L", (5, 5), 0), 20, 10) is None


def test_mask_of_another_size_is_resized_with_nearest_neighbour():
    small = np.array([[1, 0, 0, 1, 0],
                      [0, 1, 1, 0, 0],
                      [0, 0, 0, 0, 1],
                      [1, 1, 0, 0, 0]], dtype=np.uint8)   # 5 wide, 4 high
    mask = load_mask(small, 50, 40)
    assert mask.shape == (40, 50) and mask.dtype == bool
    # Exactly 10x in both directions: nearest neighbour gives 10x10 blocks, no blended edges.
    assert np.array_equal(mask, np.kron(small, np.ones((10, 10), dtype=np.uint8)).astype(bool))


def test_mask_file_any_channels_and_white_is_editable(tmp_path):
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    rgb[:, 4:] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(rgb).save(path)
    mask = load_mask(path, 16, 12)
    assert mask.shape == (12, 16)
    assert not mask[:, :8].any() and mask[:, 8:].all()
    assert np.array_equal(load_mask(rgb > 0, 16, 12), mask)
    assert np.array_equal(load_mask(rgb[..., 0] / 255.0, 16, 12), mask)


def test_bad_masks(tmp_path):
    with pytest.raises(InputError, match="mask file not found"):
        load_mask(tmp_path / "nothere.png", 10, 10)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x00\x01 not a picture")
    with pytest.raises(InputError, match="junk.png is not an image"):
        load_mask(junk, 10, 10)
    with pytest.raises(InputError, match="must be HxW"):
        load_mask(np.zeros((2, 2, 2, 2)), 10, 10)


# ------------------------------------------------------------------ models
def test_unknown_model_id_without_network(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)   # read once at import time by the hub client
    name = "nobody-here/no-such-model-anywhere"
    with pytest.raises(ModelNotFoundError) as caught:
        load_model(name, device="cpu")
    message = str(caught.value)
    assert f"could not load model {name!r}" in message
    assert "Tried: the Hugging Face hub id" in message and "disabled by HF_HUB_OFFLINE" in message
    assert "local cache at" in message
    assert "To fix:" in message and f"hf download {name}" in message and "--model /path/to/folder" in message
    assert isinstance(caught.value, OSError)


def test_nonexistent_local_folder(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ModelNotFoundError, match=r"model folder '.*no/such/model' does not exist\. Give an existing folder"):
        load_model(str(missing), device="cpu")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model("./relative/missing-model", device="cpu")


def test_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelNotFoundError, match="lacks the subfolder.*vae, text_encoder, tokenizer, scheduler"):
        load_model(tmp_path, device="cpu")
