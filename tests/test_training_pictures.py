"""The toy's training pictures (broad_scenes) and the drawn pictures it is measured on
(drawn_pictures): seeded, as broad as they say, and their ground truth consistent."""

import colorsys
import math

import numpy as np
import pytest

from dragwidget.toy import broad_scenes, drawn_pictures
from dragwidget.toy.broad_scenes import COLOR_WORDS, SHAPE_WORDS, broad_picture, color_word, shape_distance, vocabulary
from dragwidget.toy.drawn_pictures import KINDS, random_drawn_picture


def pictures(seed, count=200):
    rng = np.random.default_rng(seed)
    return [broad_picture(rng, 64) for _ in range(count)]


def test_training_pictures_are_seeded():
    first, again, other = pictures(1, 8), pictures(1, 8), pictures(2, 8)
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_training_colours_are_continuous_not_a_palette():
    """Hundreds of distinct background colours over every hue, not the five of the palette scenes."""
    corners = [tuple(image[0, 0] // 16) for image, _ in pictures(3)]
    assert len(set(corners)) > 120
    hues = [colorsys.rgb_to_hsv(*(image[0, 0] / 255))[0] for image, _ in pictures(3)]
    assert np.histogram(hues, bins=6, range=(0, 1))[0].min() >= 5


def test_every_caption_word_is_in_the_vocabulary():
    words = set(vocabulary())
    for _, caption in pictures(4):
        assert set(caption.replace(",", "").split()) <= words, caption


@pytest.mark.parametrize("kind", SHAPE_WORDS)
def test_every_shape_kind_covers_about_its_size(kind):
    ys, xs = np.mgrid[0:64, 0:64].astype(np.float32)
    areas = []
    for seed in range(8):  # random aspects and corners: some draws are thin
        inside = shape_distance(np.random.default_rng(seed), kind, xs, ys, (32.0, 32.0), 12.0) <= 0
        assert not inside[:, :19].any() and not inside[:, 46:].any()  # nothing beyond the radius
        areas.append(inside.sum())
    assert 25 < np.median(areas) < math.pi * 13 ** 2, kind


def test_a_polygon_distance_is_negative_inside_and_a_pixel_outside_reads_its_distance():
    square = np.array([[-5.0, -5.0], [5.0, -5.0], [5.0, 5.0], [-5.0, 5.0]])
    u, v = np.array([0.0, 7.0, 0.0]), np.array([0.0, 0.0, -3.0])
    assert broad_scenes._polygon(u, v, square) == pytest.approx([-5.0, 2.0, -2.0])


def test_colour_words_name_their_own_colours():
    for name, rgb in COLOR_WORDS.items():
        assert color_word(rgb) == name
    assert color_word((250, 20, 20)) == "red" and color_word((20, 20, 20)) == "black"


def test_drawn_pictures_are_seeded_and_drawn_in_every_kind():
    rng, again = np.random.default_rng(5), np.random.default_rng(5)
    drawn = [random_drawn_picture(rng, 64) for _ in range(60)]
    assert all(np.array_equal(a.render(), random_drawn_picture(again, 64).render()) for a in drawn)
    assert {o.kind for p in drawn for o in p.objects} == set(KINDS)
    assert {p.antialiased for p in drawn} == {True, False} and {len(p.background) for p in drawn} == {1, 2}


def test_a_drawn_object_drawn_again_elsewhere_is_the_ground_truth_of_a_move():
    picture = random_drawn_picture(np.random.default_rng(6), 128)
    obj = picture.objects[0]
    moved = picture.with_object(0, obj.moved(6, -4))
    before, after = picture.object_masks()[0], moved.object_masks()[0]
    assert abs(int(before.sum()) - int(after.sum())) <= 0.05 * before.sum()
    ys, xs = np.nonzero(before)
    ys2, xs2 = np.nonzero(after)
    assert (xs2.mean() - xs.mean(), ys2.mean() - ys.mean()) == pytest.approx((6, -4), abs=0.6)


def test_drawn_objects_stand_out_from_everything_behind_them():
    for seed in range(20):
        picture = random_drawn_picture(np.random.default_rng(seed), 64)
        behind = drawn_pictures.background_colors(picture.background)
        for obj in picture.objects:
            assert min(math.dist(obj.rgb, c) for c in behind) >= drawn_pictures.MIN_CONTRAST
