"""DDIM inversion followed by DDIM denoising gives the clean latent back."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from dragwidget import DragConfig
from dragwidget.ddim_inversion import ddim_scheduler, drag_timestep_index, invert
from dragwidget.denoise_decode import denoise
from dragwidget.encoding import encode_prompt


def smooth_latent(seed, shape=(1, 4, 24, 32)):
    """A smooth latent with unit standard deviation, the scale of real SD latents.

    (The tiny random VAE's own latents have a std of about 0.06; relative errors measured on
    those mostly measure the random UNet's output scale, not the inversion.)
    """
    coarse = torch.randn(shape[0], shape[1], shape[2] // 4, shape[3] // 4, generator=torch.Generator().manual_seed(seed))
    fine = F.interpolate(coarse, size=shape[2:], mode="bilinear", align_corners=False)
    return fine / fine.std()


def relative(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def setup(tiny_model, small_config):
    config = small_config.replace(mutual_attention=False)
    return tiny_model, config, encode_prompt(tiny_model, "a red disc")


def reconstruct(model, config, embedding, noisy, mutual=False):
    return denoise(model, ddim_scheduler(model, config), drag_timestep_index(config), noisy, noisy, embedding,
                   config.replace(mutual_attention=mutual))


def test_inversion_then_denoising_reconstructs_the_latent(setup):
    model, config, embedding = setup
    clean = smooth_latent(0)
    inverted = invert(model, clean, embedding, config)
    assert inverted.shape == clean.shape
    # The inversion really moved the latent up the schedule (an identity "inversion" fails here) ...
    assert relative(inverted, clean) > 0.3
    reconstructed = reconstruct(model, config, embedding, inverted)
    error = relative(reconstructed, clean)

    # Controls, denoised the same way from the same timestep:
    scheduler = ddim_scheduler(model, config)
    timestep = scheduler.timesteps[drag_timestep_index(config)]
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    forward_noised = scheduler.add_noise(clean, noise, timestep.view(1))  # what a stochastic "inversion" gives
    other = invert(model, smooth_latent(2), embedding, config)           # the inversion of another latent
    error_forward = relative(reconstruct(model, config, embedding, forward_noised), clean)
    error_other = relative(reconstruct(model, config, embedding, other), clean)

    # Measured on the tiny random model (10 DDIM steps, 7 inverted): error 0.11, forward-noised
    # 2.4, other latent 1.4. DDIM inversion is exact only when the noise prediction is the same at
    # neighbouring steps; a random UNet's prediction varies with t, so some error is inherent.
    # 0.25 leaves room for numerical noise while a wrong inversion (noise, a mis-aligned timestep,
    # the wrong number of steps) lands far above it.
    assert error < 0.25, error
    assert error_forward > 1.0 and error_other > 0.7, (error_forward, error_other)
    assert error < 0.25 * min(error_forward, error_other)


def test_mutual_attention_with_identical_branches_does_not_change_denoising(setup):
    model, config, embedding = setup
    inverted = invert(model, smooth_latent(3), embedding, config)
    plain = reconstruct(model, config, embedding, inverted)
    controlled = reconstruct(model, config, embedding, inverted, mutual=True)
    # Measured difference 2e-5 (float32 attention through another code path).
    torch.testing.assert_close(controlled, plain, rtol=0, atol=1e-4)


class ConstantNoiseUNet:
    """A stand-in UNet predicting the same noise at every step: DDIM is then exactly invertible."""

    def __init__(self, noise):
        self.noise = noise
        self.timesteps = []

    def __call__(self, latents, timestep, encoder_hidden_states=None):
        self.timesteps.append(int(timestep))
        return SimpleNamespace(sample=self.noise.expand_as(latents))


@pytest.mark.parametrize("steps,strength", [(50, 0.7), (10, 0.7), (20, 0.5)])
def test_inversion_and_denoising_meet_at_the_same_timestep(tiny_model, steps, strength):
    config = DragConfig(num_inference_steps=steps, inversion_strength=strength, mutual_attention=False)
    clean = smooth_latent(4)
    stub = ConstantNoiseUNet(torch.randn(clean.shape, generator=torch.Generator().manual_seed(5)))
    model = dataclasses.replace(tiny_model, unet=stub)
    embedding = torch.zeros(1, 3, 8)  # ignored by the stand-in
    inverted = invert(model, clean, embedding, config)
    inversion_timesteps = list(stub.timesteps)
    stub.timesteps.clear()
    scheduler = ddim_scheduler(model, config)
    start = drag_timestep_index(config)
    reconstructed = denoise(model, scheduler, start, inverted, inverted, embedding, config)
    # With a constant noise prediction both directions are exact, so any mismatch in where the
    # inversion stops and the denoising starts shows up as an error.
    torch.testing.assert_close(reconstructed, clean, rtol=0, atol=1e-4)
    # Closed form: the clean latent counts as the sample at alphas_cumprod[0] (set_alpha_to_one
    # False), and the inverted one is the same x0 noised to the drag timestep.
    first, last = scheduler.alphas_cumprod[0], scheduler.alphas_cumprod[int(scheduler.timesteps[start])]
    x0 = (clean - (1 - first).sqrt() * stub.noise) / first.sqrt()
    torch.testing.assert_close(inverted, last.sqrt() * x0 + (1 - last).sqrt() * stub.noise, rtol=0, atol=1e-4)
    assert len(inversion_timesteps) == config.inversion_steps == len(stub.timesteps)
    if (steps, strength) == (50, 0.7):
        assert int(scheduler.timesteps[start]) == 681  # the reference's drag timestep
