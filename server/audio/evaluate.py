"""Held-out quality of the WaveNet: teacher-forced negative log-likelihood in bits per sample (8 is chance)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from server.audio.data import Utterance
from server.audio.features import utterance_features
from server.audio.model import SILENCE, WaveNet

LN2 = math.log(2.0)


@torch.no_grad()
def utterance_bits(model: WaveNet, utterance: Utterance, voice_id: int | None = None) -> float:
    """Bits to encode every sample of ``utterance`` from its first, the layers starting from silence."""
    device = model.embed.weight.device
    feats = utterance_features(model, utterance.mel, utterance.voice_id if voice_id is None else voice_id)
    codes = torch.from_numpy(utterance.codes.astype(np.int64)).to(device)
    inputs = torch.cat([torch.tensor([SILENCE], device=device), codes[:-1]])[None]  # (1, T)
    logits = model(inputs, feats)[0]  # (T, 256)
    return F.cross_entropy(logits.float(), codes, reduction="sum").item() / LN2


def bits_per_sample(model: WaveNet, utterances: list[Utterance]) -> float:
    """Teacher-forced held-out NLL over whole utterances, in bits per sample."""
    if not utterances:
        raise ValueError("no utterances to score")
    was_training = model.training
    model.eval()
    try:
        bits = sum(utterance_bits(model, u) for u in utterances)
    finally:
        model.train(was_training)
    return bits / sum(u.samples for u in utterances)


@torch.no_grad()
def batch_bits_per_sample(
    model: WaveNet, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
) -> float:
    """Bits per sample of a fixed batch of segments (``SegmentSampler.batch``): the trainer's quick estimate."""
    inputs, targets, mel, voice = (t.to(model.embed.weight.device) for t in batch)
    was_training = model.training
    model.eval()
    try:
        logits = model(inputs, model.frame_features(mel, voice))  # (B, T, 256)
        nats = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()).item()
    finally:
        model.train(was_training)
    return nats / LN2
