"""Point tracking and motion supervision on constructed feature maps (no model needed)."""

import torch

from dragwidget.motion_supervision import motion_supervision_loss, sample_features
from dragwidget.point_tracking import track_points


def xy(x, y):
    return torch.tensor([float(x), float(y)])


def random_map(seed, channels=8, height=20, width=24):
    return torch.randn(1, channels, height, width, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ point tracking
def test_tracking_finds_a_shifted_feature():
    before = random_map(0)
    after = random_map(1)                           # everything changed ...
    after[0, :, 7 + 2, 5 + 3] = before[0, :, 7, 5]  # ... but the handle's feature moved by (+3, +2)
    handle = xy(5, 7)
    # The original spot no longer matches: a tracker that stayed put would be wrong.
    assert not torch.allclose(after[0, :, 7, 5], before[0, :, 7, 5])
    (found,) = track_points(before, after, torch.stack([handle]), torch.stack([handle]), radius=3)
    assert found.tolist() == [8.0, 9.0]


def test_tracking_searches_around_the_current_handle_for_the_initial_feature():
    before = random_map(2)
    after = random_map(3)
    initial, current = xy(5, 7), xy(8, 9)
    # The feature of the initial handle is now at (10, 10): 5 px from the initial handle (outside
    # a radius-3 window around it) but inside the window around the current handle.
    after[0, :, 10, 10] = before[0, :, 7, 5]
    # A decoy: the *current* position holds what used to be there in the initial map, which is
    # what a tracker comparing against F0[current] instead of F0[initial] would pick.
    after[0, :, 9, 8] = before[0, :, 9, 8]
    (found,) = track_points(before, after, torch.stack([initial]), torch.stack([current]), radius=3)
    assert found.tolist() == [10.0, 10.0]


def test_tracking_stays_inside_its_window_and_handles_are_independent():
    before = random_map(4)
    after = random_map(5)
    after[0, :, 2, 20] = before[0, :, 2, 12]        # moved 8 px: beyond radius 3
    after[0, :, 15, 3] = before[0, :, 16, 2]        # second handle moved by (+1, -1)
    first, second = track_points(before, after, torch.stack([xy(12, 2), xy(2, 16)]), torch.stack([xy(12, 2), xy(2, 16)]), radius=3)
    assert abs(first[0] - 12) <= 3 and abs(first[1] - 2) <= 3
    assert second.tolist() == [3.0, 15.0]


def test_tracking_window_is_clipped_at_the_border():
    before = random_map(6)
    after = random_map(7)
    after[0, :, 0, 23] = before[0, :, 1, 22]        # into the top-right corner pixel
    (found,) = track_points(before, after, torch.stack([xy(22, 1)]), torch.stack([xy(22, 1)]), radius=3)
    assert found.tolist() == [23.0, 0.0]


# ------------------------------------------------------------------ motion supervision
VECTOR = torch.tensor([1.0, 0.5, -0.7, 2.0])


def bump(center, height=16, width=20, sigma=2.0):
    """A feature map holding one Gaussian blob (channel profile VECTOR) at `center` (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                            torch.arange(width, dtype=torch.float32), indexing="ij")
    weight = torch.exp(-((xs - center[0]) ** 2 + (ys - center[1]) ** 2) / (2 * sigma ** 2))
    return (VECTOR[:, None, None] * weight)[None]


def optimise_center(handle, target, steps=25, lr=0.05):
    center = handle.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([center], lr=lr)
    for _ in range(steps):
        loss = motion_supervision_loss(bump(center), torch.stack([handle]), torch.stack([target]), radius=1, reach_threshold=2.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return center.detach()


def test_motion_supervision_moves_the_content_toward_the_target_horizontally():
    handle, target = xy(6, 8), xy(13, 8)
    moved = optimise_center(handle, target) - handle
    assert moved[0] > 0.5, f"the blob did not move toward the target: {moved.tolist()}"
    assert abs(moved[1]) < 0.2 * moved[0]


def test_motion_supervision_moves_the_content_along_a_diagonal():
    handle, target = xy(10, 10), xy(5, 4)          # up and to the left
    moved = optimise_center(handle, target) - handle
    direction = (target - handle) / (target - handle).norm()
    assert moved.norm() > 0.5
    assert float(moved @ direction) / float(moved.norm()) > 0.9, moved.tolist()


def test_motion_supervision_gradient_on_a_feature_map_shifts_its_centroid():
    handle, target = xy(8, 8), xy(8, 14)           # straight down
    original = bump(handle, sigma=1.0)
    features = original.clone().requires_grad_(True)

    def centroid(fmap):
        weight = fmap[0].sum(0).clamp(min=0)
        ys, xs = torch.meshgrid(torch.arange(fmap.shape[2], dtype=torch.float32),
                                torch.arange(fmap.shape[3], dtype=torch.float32), indexing="ij")
        return torch.stack([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()

    # Two small steps on the map itself. (Iterating to convergence on a fixed handle smears the
    # patch into a plateau - in the method the tracker moves the handle between steps.)
    optimiser = torch.optim.SGD([features], lr=0.1)
    for _ in range(2):
        loss = motion_supervision_loss(features, torch.stack([handle]), torch.stack([target]), radius=1, reach_threshold=2.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    edited = features.detach()
    shift = centroid(edited) - centroid(original)
    assert shift[1] > 0.01, shift.tolist()      # toward the target (a sign error moves it up)
    assert abs(shift[0]) < 0.05 * shift[1]
    # The pixel one unit step toward the target became more like the handle's feature ...
    before = (original[0, :, 9, 8] - original[0, :, 8, 8]).abs().sum()
    after = (edited[0, :, 9, 8] - original[0, :, 8, 8]).abs().sum()
    assert after < 0.95 * before
    # ... while the content behind the handle (away from the target) was not touched.
    assert torch.equal(edited[0, :, :8, :], original[0, :, :8, :])


def test_no_supervision_once_the_handle_is_within_reach():
    handle, target = xy(6, 8), xy(7.5, 8)          # 1.5 px < reach threshold 2
    center = handle.clone().requires_grad_(True)
    loss = motion_supervision_loss(bump(center), torch.stack([handle]), torch.stack([target]), radius=1, reach_threshold=2.0)
    assert float(loss.detach()) == 0.0
    if loss.requires_grad:
        loss.backward()
        assert center.grad is None or torch.count_nonzero(center.grad) == 0


def test_reached_pairs_do_not_contribute_but_unfinished_ones_do():
    handle_far, target_far = xy(6, 8), xy(13, 8)
    handle_near, target_near = xy(14, 4), xy(15, 4)
    features = bump(xy(6, 8))
    alone = motion_supervision_loss(features, torch.stack([handle_far]), torch.stack([target_far]), 1, 2.0)
    both = motion_supervision_loss(features, torch.stack([handle_far, handle_near]), torch.stack([target_far, target_near]), 1, 2.0)
    assert float(alone) > 0
    assert torch.equal(alone, both)


def test_sample_features_is_bilinear_in_grid_pixels():
    fmap = torch.arange(12, dtype=torch.float32).view(1, 1, 3, 4)   # value = 4 y + x
    points = torch.tensor([[0.0, 0.0], [3.0, 2.0], [1.5, 0.5], [2.25, 1.0]])
    values = sample_features(fmap, points)[0]
    assert torch.allclose(values, points[:, 1] * 4 + points[:, 0])
