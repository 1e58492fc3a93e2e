"""What a trained NeuroLIP model says about subjects: prompt scores, features and attention.

* Zero-shot diagnosis: each subject is scored against the two diagnosis prompts (mean cosine
  over the prompt's diagnosis tokens, times the logit scale); the softmax gives the
  probability of the patient prompt.
* Linear-probe features: the token-specific brain embeddings of both prompts (mean over the
  diagnosis tokens), concatenated.
* Attention: per subject, the attention over ROIs of each prompt's diagnosis tokens, and of
  the subject's own sensitive tokens (e.g. ``male``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mnm.neurolip.model import NeuroLIP, slot_similarity
from mnm.neurolip.tensors import Cohort, TokenBank

__all__ = ["PromptReadout", "prompt_readout", "own_slot_attention", "slot_word"]


@dataclass
class PromptReadout:
    """Per subject: ``probability`` of the patient prompt ``(N,)``, ``features`` ``(N, 2 dim)``,
    ``attention`` ``(N, 2, R)`` (control prompt, patient prompt)."""

    probability: np.ndarray
    features: np.ndarray
    attention: np.ndarray


def _prompt_scores(model: NeuroLIP, cohort: Cohort, bank: TokenBank):
    rows = torch.tensor(np.asarray(bank.prompt_rows, dtype=np.int64))  # a copy: Arrow buffers are read-only
    weights = bank.slot_mask("diagnosis", rows)
    cosine, attention, embeddings = model(cohort.connectivity, cohort.region_valid, bank.vectors[rows],
                                          bank.mask[rows])
    score = model.logit_scale * slot_similarity(cosine, weights)
    w = weights.to(embeddings.dtype)
    count = w.sum(-1).clamp(min=1.0)
    features = (embeddings * w[None, :, :, None]).sum(2) / count[None, :, None]
    mean_attention = (attention * w[None, :, :, None]).sum(2) / count[None, :, None]
    return score, features, mean_attention


@torch.no_grad()
def prompt_readout(model: NeuroLIP, cohort: Cohort, bank: TokenBank, chunk: int = 256) -> PromptReadout:
    """Zero-shot probabilities, probe features and prompt attention (module docstring)."""
    model.eval()
    probability, features, attention = [], [], []
    for start in range(0, len(cohort), chunk):
        part = slice(start, start + chunk)
        sub = Cohort(cohort.subjects.iloc[part], cohort.connectivity[part], cohort.region_valid[part],
                     {k: v[part] for k, v in cohort.codes.items()}, cohort.text_rows[part])
        score, feat, att = _prompt_scores(model, sub, bank)
        probability.append(torch.softmax(score, dim=1)[:, 1])
        features.append(feat.reshape(len(sub), -1))
        attention.append(att)
    return PromptReadout(torch.cat(probability).numpy(), torch.cat(features).numpy(), torch.cat(attention).numpy())


@torch.no_grad()
def own_slot_attention(model: NeuroLIP, cohort: Cohort, bank: TokenBank, slot: str) -> np.ndarray:
    """``(N, R)`` mean attention of each subject's own tokens of ``slot`` (NaN rows without any)."""
    model.eval()
    rows = cohort.text_rows
    _, attention, _ = model(cohort.connectivity, cohort.region_valid, bank.vectors[rows], bank.mask[rows],
                            pairwise=False)
    weights = bank.slot_mask(slot, rows).to(attention.dtype)
    count = weights.sum(-1)
    mean = (attention * weights[..., None]).sum(1) / count.clamp(min=1.0)[:, None]
    mean[count == 0] = float("nan")
    return mean.numpy()


def slot_word(bank: TokenBank, row: int, slot: str) -> str:
    """The words of ``slot`` in text ``row`` of the bank (word pieces joined)."""
    mask = bank.slot_mask(slot, torch.as_tensor([row]))[0].numpy()
    pieces = [str(t) for t in bank.tokens[row][mask]]
    word = ""
    for piece in pieces:
        word += piece[2:] if piece.startswith("##") else (" " if word else "") + piece
    return word
