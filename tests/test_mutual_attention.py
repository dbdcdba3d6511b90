"""Mutual self-attention: the edited branch reads the original branch's keys and values."""

import pytest
import torch
import torch.nn.functional as F

import tiny_models
from dragwidget import DragConfig
from dragwidget.encoding import encode_prompt
from dragwidget.mutual_self_attention import (
    DenoisingStep, MutualSelfAttentionProcessor, controlled_layers, mutual_self_attention, self_attention_layers)


def latents(seed, shape=(1, 4, 12, 16)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def run_unet(model, batch, timestep=500):
    embedding = encode_prompt(model, "a red disc").expand(batch.shape[0], -1, -1)
    with torch.no_grad():
        return model.unet(batch, timestep, encoder_hidden_states=embedding).sample


def test_identical_branches_give_the_plain_unet_output(fresh_model):
    x = latents(0)
    batch = torch.cat([x, x])
    plain = run_unet(fresh_model, batch)
    with mutual_self_attention(fresh_model.unet, DragConfig()):
        controlled = run_unet(fresh_model, batch)
    torch.testing.assert_close(controlled, plain, rtol=0, atol=1e-5)


def test_edited_branch_changes_and_original_branch_does_not(fresh_model):
    original, edited = latents(1), latents(2)
    batch = torch.cat([original, edited])
    plain = run_unet(fresh_model, batch)
    with mutual_self_attention(fresh_model.unet, DragConfig()):
        controlled = run_unet(fresh_model, batch)
    # The original row attends to itself as before ...
    torch.testing.assert_close(controlled[0], plain[0], rtol=0, atol=1e-5)
    # ... the edited row now attends to the original: clearly another output.
    difference = (controlled[1] - plain[1]).abs().mean()
    assert difference > 1e-2 * plain[1].abs().mean(), float(difference)


def test_processor_uses_the_original_rows_keys_and_values(fresh_model):
    attn = fresh_model.unet.up_blocks[3].attentions[1].transformer_blocks[0].attn1
    base = attn.processor
    step = DenoisingStep()
    processor = MutualSelfAttentionProcessor(base, step, start_step=2)
    tokens, channels = 24, attn.to_q.in_features
    a = torch.randn(1, tokens, channels, generator=torch.Generator().manual_seed(3))
    b = torch.randn(1, tokens, channels, generator=torch.Generator().manual_seed(4))

    def attention(queries_from, keys_values_from):
        q, k, v = attn.to_q(queries_from), attn.to_k(keys_values_from), attn.to_v(keys_values_from)
        heads = attn.heads
        split = lambda t: t.view(t.shape[0], -1, heads, t.shape[-1] // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        out = out.transpose(1, 2).reshape(q.shape)
        return attn.to_out[1](attn.to_out[0](out))

    with torch.no_grad():
        torch.testing.assert_close(base(attn, b), attention(b, b), rtol=1e-5, atol=1e-5)  # the helper is right
        both = torch.cat([a, b])
        step.index = 2                                          # from the start step on: controlled
        out = processor(attn, both)
        torch.testing.assert_close(out[0:1], attention(a, a), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[1:2], attention(b, a), rtol=1e-5, atol=1e-5)
        step.index = 1                                          # before the start step: untouched
        torch.testing.assert_close(processor(attn, both), base(attn, both), rtol=0, atol=0)
        # Cross-attention calls (encoder_hidden_states given) are passed through unchanged.
        text = torch.randn(2, 5, channels)
        torch.testing.assert_close(processor(attn, both, text), base(attn, both, text), rtol=0, atol=0)


def test_processors_are_restored_after_the_block(fresh_model):
    unet = fresh_model.unet
    before = dict(unet.attn_processors)
    with mutual_self_attention(unet, DragConfig()):
        during = unet.attn_processors
        chosen = set(controlled_layers(unet, DragConfig()))
        assert chosen and all(isinstance(during[name], MutualSelfAttentionProcessor) for name in chosen)
        assert all(during[name] is before[name] for name in before if name not in chosen)
    after = unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[name] is before[name] for name in before)


def test_processors_are_restored_after_an_exception(fresh_model):
    unet = fresh_model.unet
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError, match="boom"):
        with mutual_self_attention(unet, DragConfig()):
            raise RuntimeError("boom")
    after = unet.attn_processors
    assert all(after[name] is before[name] for name in before)
    assert not any(isinstance(p, MutualSelfAttentionProcessor) for p in after.values())


def sd15_unet_on_meta_device(monkeypatch):
    """Stable Diffusion 1.5's UNet, built without weights (meta device): only its layout matters."""
    from diffusers import UNet2DConditionModel

    captured = {}
    monkeypatch.setattr(tiny_models, "build_model_folder", lambda folder, **configs: captured.update(configs))
    tiny_models.build_sd15_architecture_model("unused")
    with torch.device("meta"):
        return UNet2DConditionModel(**captured["unet_config"])


def test_controlled_layers_are_the_last_six_of_sixteen_on_sd15(monkeypatch):
    unet = sd15_unet_on_meta_device(monkeypatch)
    order = self_attention_layers(unet)
    assert len(order) == 16
    # Run order: 6 encoder layers, the middle block, then 9 decoder layers.
    assert [name.split(".")[0] for name in order] == ["down_blocks"] * 6 + ["mid_block"] + ["up_blocks"] * 9
    chosen = controlled_layers(unet, DragConfig())
    # The reference's transformer blocks 10..15: the last two decoder levels, three layers each.
    assert chosen == [f"up_blocks.{level}.attentions.{i}.transformer_blocks.0.attn1.processor"
                      for level in (2, 3) for i in range(3)]


def test_controlled_layers_keep_the_proportion_on_the_tiny_model(fresh_model):
    order = self_attention_layers(fresh_model.unet)
    assert len(order) == 10
    assert not any("attn2" in name for name in order)            # cross-attention is never controlled
    chosen = controlled_layers(fresh_model.unet, DragConfig())
    # 6/16 of 10 layers is 3.75: three or four of the last decoder layers.
    assert len(chosen) in (3, 4)
    assert chosen == order[-len(chosen):]
    assert all(name.startswith("up_blocks.") for name in chosen)
