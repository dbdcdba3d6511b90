"""The mask term of the latent optimisation keeps the region outside the mask in place."""

import pytest
import torch
import torch.nn.functional as F

from dragwidget.ddim_inversion import ddim_scheduler, drag_timestep_index, invert
from dragwidget.encoding import encode_prompt
from dragwidget.feature_grid import FeatureGrid
from dragwidget.methods.common import DragInputs
from dragwidget.methods.dragdiffusion import optimize_latent


GRID = FeatureGrid((64, 48), (24, 32))   # the drag's grid for a 64x48 image


@pytest.fixture(scope="module")
def inverted(tiny_model, small_config):
    """An inverted unit-std latent (24x32, the latent of a 64x48 image) and what the drag needs."""
    config = small_config.replace(max_drag_steps=8, mutual_attention=False)
    coarse = torch.randn(1, 4, 6, 8, generator=torch.Generator().manual_seed(0))
    clean = F.interpolate(coarse, size=(24, 32), mode="bilinear", align_corners=False)
    clean = clean / clean.std()
    embedding = encode_prompt(tiny_model, "a red disc")
    scheduler = ddim_scheduler(tiny_model, config)
    return config, invert(tiny_model, clean, embedding, config), embedding, scheduler, drag_timestep_index(config)


def drag(model, inverted, keep_mask, **changes):
    config, latent, embedding, scheduler, start = inverted
    torch.manual_seed(42)
    # Handle in the right half, dragged further right; the left half is what the mask keeps.
    return optimize_latent(DragInputs(model, latent, scheduler, start, embedding, torch.tensor([[20.0, 12.0]]),
                                      torch.tensor([[28.0, 12.0]]), GRID, config.replace(**changes),
                                      keep_mask=keep_mask))


def test_mask_term_keeps_the_unmasked_region_closer_to_the_original(tiny_model, inverted):
    latent = inverted[1]
    keep = torch.zeros(1, 1, 24, 32)
    keep[..., :16] = 1.0

    free = drag(tiny_model, inverted, None)
    masked = drag(tiny_model, inverted, keep)          # the reference weight, 0.1
    assert free.steps == masked.steps == 8             # both ran the whole optimisation

    def change(outcome, region):
        return float((outcome.latent - latent)[..., region].abs().mean())

    kept_free, kept_masked = change(free, slice(0, 16)), change(masked, slice(0, 16))
    edited_masked = change(masked, slice(16, 32))
    # Measured: the kept half moves 0.040 without the term and 0.006 with it (Adam, lr 0.01, 8 steps);
    # the UNet's receptive field spans the whole 24x32 latent, so without a mask the far half moves as
    # much as the dragged one.
    assert kept_free > 0.02
    assert kept_masked < 0.4 * kept_free, (kept_masked, kept_free)
    # The editable half is still being optimised.
    assert edited_masked > 3 * kept_masked, (edited_masked, kept_masked)


def test_zero_mask_weight_is_the_same_as_no_mask(tiny_model, inverted):
    keep = torch.zeros(1, 1, 24, 32)
    keep[..., :16] = 1.0
    free = drag(tiny_model, inverted, None)
    unweighted = drag(tiny_model, inverted, keep, mask_weight=0.0)
    torch.testing.assert_close(unweighted.latent, free.latent, rtol=0, atol=1e-6)


def test_optimisation_outcome_is_consistent(tiny_model, inverted):
    outcome = drag(tiny_model, inverted, None, max_drag_steps=3)
    assert outcome.steps == 3 and not outcome.reached
    assert len(outcome.trajectory) == outcome.steps + 1
    assert outcome.trajectory[0] == [(20.0, 12.0)]
    assert [tuple(float(v) for v in h) for h in outcome.handles] == outcome.trajectory[-1]
    # Tracking moves at most r_p = 3 grid pixels per step.
    for before, after in zip(outcome.trajectory, outcome.trajectory[1:]):
        assert max(abs(a - b) for a, b in zip(before[0], after[0])) <= 3
    assert not torch.equal(outcome.latent, inverted[1])


def test_optimisation_stops_as_soon_as_the_targets_are_reached(tiny_model, inverted):
    config, latent, embedding, scheduler, start = inverted
    outcome = optimize_latent(DragInputs(tiny_model, latent, scheduler, start, embedding, torch.tensor([[20.0, 12.0]]),
                                         torch.tensor([[21.0, 12.0]]), GRID, config))
    assert outcome.reached and outcome.steps == 0
    assert torch.equal(outcome.latent, latent)
