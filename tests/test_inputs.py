"""What the user gives: images, points, masks and model names, good and bad (API level)."""

import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dragwidget import DragRequest, InputError, ModelNotFoundError, PointPair, load_model
from dragwidget.feature_grid import FeatureGrid
from dragwidget.image_input import load_image, load_mask, validate_prompt, working_size
from dragwidget.points import normalise_points, parse_points_text

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
    with pytest.raises(InputError, match=r"HxW, HxWx2 \(grey, alpha\), HxWx3 or HxWx4"):
        load_image(np.zeros((8, 8, 5), dtype=np.uint8))


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


# ------------------------------------------------------------------ pixel formats
RAMP16 = np.tile(np.linspace(0, 65535, 16).round().astype(np.uint16), (8, 1))   # 8x16, full 16-bit range
RAMP16_AS_8BIT = np.round(RAMP16 / 257).astype(np.uint8)                         # 0, 17, 34, ..., 255


def grey(picture):
    """The single grey channel of an RGB picture whose three channels agree."""
    array = np.asarray(picture)
    assert picture.mode == "RGB" and (array == array[..., :1]).all()
    return array[..., 0]


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(RAMP16).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I;16"
    for source in (path, RAMP16, Image.fromarray(RAMP16), RAMP16.astype(">u2")):
        assert np.array_equal(grey(load_image(source)), RAMP16_AS_8BIT), type(source)   # was all white


def test_32_bit_integer_images_by_their_range():
    as_i = Image.fromarray(RAMP16.astype(np.int32))            # mode I holding 16-bit data
    assert as_i.mode == "I"
    assert np.array_equal(grey(load_image(as_i)), RAMP16_AS_8BIT)
    eight_bit = np.tile(np.arange(0, 256, 17), (8, 1))         # numpy's default int64, 8-bit values
    assert np.array_equal(grey(load_image(eight_bit)), eight_bit)
    wide = np.tile(np.arange(16) * 100_000 - 500_000, (8, 1)).astype(np.int32)   # neither: stretched
    assert np.array_equal(grey(load_image(Image.fromarray(wide))), np.round(np.arange(16) * 17).astype(np.uint8)[None].repeat(8, 0))


@pytest.mark.parametrize("values,expected", [
    (np.linspace(0, 1, 16), np.linspace(0, 255, 16)),          # [0, 1]: times 255 (was all black as mode F)
    (np.linspace(-1, 1, 16), np.linspace(0, 255, 16)),         # [-1, 1]: the diffusion convention
    (np.linspace(0, 255, 16), np.linspace(0, 255, 16)),        # 8-bit values
    (np.linspace(-3, 1000, 16), np.linspace(0, 255, 16)),      # anything else: min..max stretched
])
def test_float_images_are_scaled(values, expected, tmp_path):
    array = np.tile(values.astype(np.float32), (8, 1))
    path = tmp_path / "float.tif"
    Image.fromarray(array).save(path)
    for source in (array, array.astype(np.float64), Image.fromarray(array), path):
        assert np.array_equal(grey(load_image(source)), np.round(np.tile(expected, (8, 1))).astype(np.uint8)), type(source)


def test_bool_arrays_are_black_and_white():
    array = np.zeros((8, 8), dtype=bool)
    array[:, 4:] = True
    picture = grey(load_image(array))                          # was all black
    assert (picture[:, :4] == 0).all() and (picture[:, 4:] == 255).all()
    assert np.array_equal(grey(load_image(Image.fromarray(array))), picture)   # mode "1"


def test_float_rgba_array_is_scaled_and_composited():
    rgba = np.zeros((8, 8, 4), dtype=np.float32)
    rgba[..., :3] = (0.2, 0.6, 1.0)
    rgba[:, :4, 3] = 0.0
    rgba[:, 4:, 3] = 1.0
    array = np.asarray(load_image(rgba))
    assert (array[:, :4] == 255).all() and (array[:, 4:] == (51, 153, 255)).all()


def test_grey_alpha_array():
    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[..., 0], la[:, 4:, 1] = 100, 255
    assert (grey(load_image(la))[:, :4] == 255).all() and (grey(load_image(la))[:, 4:] == 100).all()


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "LA", "PA", "RGBA", "RGBX", "RGBa", "La", "I", "F"])
def test_every_pillow_mode_becomes_the_right_rgb(mode):
    colour = (200, 100, 50)
    reference = Image.new("RGB", (8, 8), colour)
    # Palettes from the picture's own colours: Pillow's default web palette would dither.
    source = reference.quantize(4).convert(mode) if mode in ("P", "PA") else reference.convert(mode)
    picture = load_image(source)
    assert picture.mode == "RGB" and picture.size == (8, 8)
    if mode == "1":
        expected = np.asarray(reference.convert("1").convert("RGB"))     # dithered black and white
    elif mode in ("L", "LA", "La", "I", "F"):
        expected = np.asarray(reference.convert("L").convert("RGB"))
    else:
        expected = np.asarray(reference)
    assert np.abs(np.asarray(picture).astype(int) - expected).max() <= 5, mode


@pytest.mark.parametrize("array,message", [
    (np.zeros((8, 8), dtype=np.complex64), "values of type complex64"),
    (np.full((8, 8), "x", dtype=object), "values of type object"),
    (np.full((8, 8), np.nan, dtype=np.float32), "NaN or infinite"),
    (np.zeros((0, 8, 3), dtype=np.uint8), "empty"),
])
def test_arrays_that_are_not_pictures_are_refused(array, message):
    with pytest.raises(InputError, match=message):
        load_image(array)


def test_16_bit_mask_file_is_scaled(tmp_path):
    mask = np.zeros((8, 16), dtype=np.uint16)
    mask[:, 8:] = 65535
    mask[:, 4:8] = 1000                                        # dark grey: not editable (was white)
    path = tmp_path / "mask16.png"
    Image.fromarray(mask).save(path)
    editable = load_mask(path, 16, 8)
    assert not editable[:, :8].any() and editable[:, 8:].all()


# ------------------------------------------------------------------ size policy
def png_header_only(path, width, height):
    """A 1-bit PNG that declares width x height: enough for Image.open, which reads only the header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [10_000, 20_000])   # above our limit; the second also above Pillow's
def test_huge_image_files_are_refused_before_decoding(tmp_path, side, recwarn):
    path = png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(InputError) as caught:
        load_image(path)
    message = str(caught.value)
    assert "above the limit of 50 megapixels" in message
    assert "DRAGWIDGET_MAX_PIXELS" in message and "max_pixels" in message
    if side == 10_000:
        assert "10000x10000 = 100.0 megapixels" in message
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    with pytest.raises(InputError, match="limit of 50 megapixels"):
        load_mask(path, 10, 10)


def test_size_limit_can_be_changed(monkeypatch, tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (40, 40), "red").save(path)
    monkeypatch.setenv("DRAGWIDGET_MAX_PIXELS", "1000")
    for source in (path, np.zeros((40, 40, 3), np.uint8), Image.new("RGB", (40, 40))):
        with pytest.raises(InputError, match=r"40x40 = 0.0 megapixels, above the limit of 0.001 megapixels"):
            load_image(source)
        assert load_image(source, max_pixels=1600).size == (40, 40)
    monkeypatch.setenv("DRAGWIDGET_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="DRAGWIDGET_MAX_PIXELS='lots' is not a pixel count"):
        load_image(path)


# ------------------------------------------------------------------ prompts
@pytest.mark.parametrize("prompt,message", [
    ("a red \udcff disc", r"encodable as UTF-8; the character at position 6 \('\\udcff'\)"),
    (b"a red disc", r"must be text \(str\), got bytes \(decode it first"),
    (None, r"must be text \(str\), got NoneType"),
])
def test_prompts_that_the_tokenizer_cannot_take(editor, make_image, prompt, message):
    assert validate_prompt("a réd dísc ✓") == "a réd dísc ✓"
    with pytest.raises(InputError, match=message):
        validate_prompt(prompt)
    events = []
    with pytest.raises(InputError, match=message):          # was a tokenizer traceback
        editor.run(DragRequest(make_image(50, 37), "10,12,30,20", prompt=prompt), progress=events.append)
    assert not events, "refused before the LoRA"
    with pytest.raises(InputError, match=message):
        editor.generate(prompt)


# ------------------------------------------------------------------ drags and the feature grid
def test_a_drag_shorter_than_the_stop_distance_is_refused_before_the_lora(editor, make_image):
    picture = make_image(50, 37)                               # the tiny model: 32x24 grid, ~1.6 px a cell
    events = []
    with pytest.raises(InputError) as caught:                  # was "reached after 0 steps"
        editor.run(DragRequest(picture, "10,12,11,12", prompt="a disc"), progress=events.append)
    assert not events, "refused before the LoRA"
    message = str(caught.value)
    assert "pair 1: handle (10, 12) -> target (11, 12) is 1.0 px long" in message
    assert "reach_threshold=2" in message and "at least about 3.1 px long" in message
    prepared = editor.prepare(picture, "a disc")
    with pytest.raises(InputError, match="pair 2: .* at least about"):
        editor.drag(prepared, "10,12,30,12;40,30,41,31")
    assert editor.drag(prepared, "10,12,15,12").steps >= 1      # about 3 cells: accepted


@pytest.mark.parametrize("width,height", [(300, 200), (50, 37), (1000, 999), (64, 64), (129, 257)])
def test_the_last_pixel_maps_into_the_feature_grid(small_config, width, height):
    grid = FeatureGrid.for_image((width, height), working_size(width, height, 64, 8), small_config)
    rows, columns = grid.shape
    assert grid.to_grid((width - 1, height - 1)) == (columns - 1, rows - 1)
    assert grid.to_grid((0, 0)) == (0, 0)
    for x in range(width):                                     # and every other point as the reference maps it
        expected = round(x * columns / width)
        assert grid.to_grid((x, 0))[0] == min(expected, columns - 1)


def test_a_handle_on_the_last_column_stays_on_the_image(editor, make_image):
    # 300 px onto a 32-cell grid: the reference's x * 32 / 300 put x = 299 on cell 32, one past the end.
    result = editor.run(DragRequest(make_image(300, 200, seed=3), "299,100,250,100;250,60,299,60", prompt="a disc"))
    first = result.trajectory[0]
    assert first[0][0] <= 299 and first[1][0] <= 299               # was 300.0: off the image
    assert all(0 <= x <= 299 and 0 <= y <= 199 for step in result.trajectory for x, y in step)


def test_a_pair_is_one_type_from_any_form_and_reads_back_as_typed():
    from dragwidget.points import PointPair

    pair = PointPair.of({"handle": [12, 6], "target": [25.5, 6]})
    assert pair == PointPair((12.0, 6.0), (25.5, 6.0)) == ((12, 6), (25.5, 6))
    assert pair == {"handle": [12, 6], "target": [25.5, 6]} and pair != {"handle": [12, 6], "target": [25, 6]}
    assert pair.to_dict() == {"handle": [12, 6], "target": [25.5, 6]}
    assert isinstance(pair.to_dict()["handle"][0], int) and isinstance(pair.to_dict()["target"][0], float)
    assert len({pair, PointPair.of(((12, 6), (25.5, 6)))}) == 1
    request = DragRequest(None, [{"handle": [1, 2], "target": [3, 4]}, ((5, 6), (7, 8))])
    assert all(isinstance(p, PointPair) for p in request.points) and request.points[1].target == (7.0, 8.0)


def test_grid_scale_goes_there_and_back():
    from dragwidget.feature_grid import FeatureGrid, GridScale

    scale = GridScale((640, 480), (32, 24))
    assert scale.to_grid((320, 240)) == (16.0, 12.0) and scale.to_image((16.0, 12.0)) == (320.0, 240.0)
    # cell centres on pixel centres: the first 20-pixel cell's centre lies at pixel 9.5
    assert scale.centre_to_grid((9.5, 9.5)) == (0.0, 0.0)
    assert scale.centre_to_image(scale.centre_to_grid((100.0, 7.0))) == pytest.approx((100.0, 7.0))
    grid = FeatureGrid((640, 480), (24, 32))
    assert grid.to_grid((639, 479)) == (31.0, 23.0) and grid.to_image((16, 12)) == (320.0, 240.0)
