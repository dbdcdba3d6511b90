"""Step 4a: reference-latent control by mutual self-attention.

While the original and the edited latent are denoised side by side (batch = [original rows,
edited rows]), the chosen self-attention layers let the edited rows attend to the keys and
values of the original rows, so the edit keeps the original's appearance. Implemented as a
diffusers attention processor that wraps whatever processor a layer already had (LoRA layers
live in the projections and keep working); the UNet's own processors are put back afterwards.

FastDrag's variant (`recording_self_attention`, `stored_self_attention`): the same layers'
inputs are recorded while the image is inverted, and the edited latent, denoised alone, attends
to the recording of its timestep: no original branch to run beside it.
"""

from __future__ import annotations

import contextlib
from typing import Dict, List

import torch

from .config import DragConfig

_SECTION_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def self_attention_layers(unet) -> List[str]:
    """Names of the self-attention processors in the order the UNet runs them (down, mid, up)."""
    names = [name for name in unet.attn_processors if name.endswith("attn1.processor")]
    return sorted(names, key=lambda name: _SECTION_ORDER[name.split(".")[0]])  # stable: keeps order within a section


def controlled_layers(unet, config: DragConfig) -> List[str]:
    """The reference's layers 10..15 of 16, in the same proportion for UNets of another depth."""
    layers = self_attention_layers(unet)
    first = config.mutual_attention_start_layer * len(layers) / config.mutual_attention_reference_layers
    return [name for index, name in enumerate(layers) if index >= first]


class DenoisingStep:
    """Shared counter of the current denoising step, read by every controlled layer."""

    def __init__(self):
        self.index = 0


class MutualSelfAttentionProcessor:
    def __init__(self, base_processor, step: DenoisingStep, start_step: int):
        self.base_processor = base_processor
        self.step = step
        self.start_step = start_step

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None and self.step.index >= self.start_step:
            # Self-attention reads keys and values from `encoder_hidden_states`; giving every row the
            # original rows' hidden states makes the edited rows attend to the original image.
            original_rows = hidden_states.chunk(2)[0]
            encoder_hidden_states = torch.cat([original_rows, original_rows])
        return self.base_processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


@contextlib.contextmanager
def mutual_self_attention(unet, config: DragConfig):
    """Install the processors for the duration of the block; yields the step counter to advance."""
    original: Dict[str, object] = unet.attn_processors
    step = DenoisingStep()
    chosen = set(controlled_layers(unet, config))
    unet.set_attn_processor({
        name: MutualSelfAttentionProcessor(processor, step, config.mutual_attention_start_step) if name in chosen else processor
        for name, processor in original.items()
    })
    try:
        yield step
    finally:
        unet.set_attn_processor(original)


class RecordingProcessor:
    """Keeps the input of each self-attention call (what its keys and values are made from)."""

    def __init__(self, base_processor, record: List[torch.Tensor]):
        self.base_processor = base_processor
        self.record = record

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None:
            self.record.append(hidden_states.detach())
        return self.base_processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


class StoredSelfAttentionProcessor:
    """Self-attention whose keys and values come from the recording of the same timestep."""

    def __init__(self, base_processor, record: List[torch.Tensor], step: DenoisingStep, start_step: int):
        self.base_processor = base_processor
        self.record = record
        self.step = step
        self.start_step = start_step

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None and self.step.index >= self.start_step:
            # the recording runs up the schedule, the denoising down it: step i of the denoising is
            # at the timestep of the recording's last but i
            recorded = self.record[len(self.record) - 1 - self.step.index]
            encoder_hidden_states = recorded.expand(hidden_states.shape[0], -1, -1).to(hidden_states.dtype)
        return self.base_processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


@contextlib.contextmanager
def recording_self_attention(unet, config: DragConfig):
    """Record the controlled layers' inputs during the block; yields {layer name: [one per UNet call]}."""
    original: Dict[str, object] = unet.attn_processors
    records: Dict[str, List[torch.Tensor]] = {name: [] for name in controlled_layers(unet, config)}
    unet.set_attn_processor({name: RecordingProcessor(processor, records[name]) if name in records else processor
                             for name, processor in original.items()})
    try:
        yield records
    finally:
        unet.set_attn_processor(original)


@contextlib.contextmanager
def stored_self_attention(unet, config: DragConfig, records: Dict[str, List[torch.Tensor]]):
    """Replay `recording_self_attention`'s records as keys and values; yields the step counter to advance."""
    original: Dict[str, object] = unet.attn_processors
    step = DenoisingStep()
    unet.set_attn_processor({
        name: StoredSelfAttentionProcessor(processor, records[name], step, config.mutual_attention_start_step)
        if name in records else processor for name, processor in original.items()})
    try:
        yield step
    finally:
        unet.set_attn_processor(original)
