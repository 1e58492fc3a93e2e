"""NeuroLIP's fairness terms act as they say through the whole model (a few optimiser steps).

Measured on a small GENERATED batch (random connectomes, random token vectors): starting from
the same weights, the negative-gradient variant raises the sex CALT that the aligning
ablation lowers, and the disentanglement term lowers the overlap of disease and sex attention.
How much this reduces the planted sex gap of a trained model depends on the fixture draw:
benchmarks/bench_neurolip.py measures it (docs/neurolip.md quotes the figures).
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from mnm.neurolip.losses import LossWeights
from mnm.neurolip.model import NeuroLIP
from mnm.neurolip.tensors import Cohort, TokenBank
from mnm.neurolip.train import TrainSettings, _optimizer, batch_losses

N_SUBJECTS, N_REGIONS, TEXT_DIM = 16, 6, 12


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: one thread is fastest and deterministic (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
SLOTS = ("diagnosis", "sex")


def _generated_batch(seed: int = 0) -> tuple[Cohort, TokenBank]:
    """GENERATED subjects (diagnosis x sex) and one text per (diagnosis, sex) value pair:
    tokens [diagnosis word, sex word, filler]."""
    g = torch.Generator().manual_seed(seed)
    diagnosis = torch.arange(N_SUBJECTS) % 2
    sex = (torch.arange(N_SUBJECTS) // 2) % 2
    connectivity = torch.randn(N_SUBJECTS, N_REGIONS, N_REGIONS, generator=g)
    connectivity = 0.5 * (connectivity + connectivity.transpose(1, 2))
    words = torch.randn(4, TEXT_DIM, generator=g)  # control, patient, female, male
    filler = torch.randn(TEXT_DIM, generator=g)
    vectors = torch.stack([torch.stack([words[d], words[2 + s], filler]) for d in (0, 1) for s in (0, 1)])
    slot_codes = torch.tensor([[0, 1, -1]] * 4)  # filler token is in no slot
    bank = TokenBank(np.array(["t0", "t1", "t2", "t3"]), vectors, torch.ones(4, 3, dtype=torch.bool), slot_codes,
                     np.full((4, 3), "", dtype=object), SLOTS, np.array([0, 2]))
    subjects = pd.DataFrame({"subject_id": [f"generated-{i}" for i in range(N_SUBJECTS)],
                             "diagnosis": diagnosis.numpy(), "sex": np.where(sex.numpy() == 1, "male", "female")})
    cohort = Cohort(subjects, connectivity, torch.ones(N_SUBJECTS, N_REGIONS, dtype=torch.bool),
                    {"diagnosis": diagnosis, "sex": sex}, 2 * diagnosis + sex)
    return cohort, bank


def _after_steps(model: NeuroLIP, weights: LossWeights, n_steps: int = 15) -> dict:
    """Loss terms (eval mode) after ``n_steps`` AdamW steps on the batch with ``weights``."""
    cohort, bank = _generated_batch()
    model = copy.deepcopy(model)
    optimizer = _optimizer(model, TrainSettings(lr=3e-3, weight_decay=0.0))
    for _ in range(n_steps):
        model.train()
        loss = batch_losses(model, cohort, bank, ["sex"], weights)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.clamp_parameters()
    model.eval()
    with torch.no_grad():
        terms = {k: float(v) for k, v in batch_losses(model, cohort, bank, ["sex"], weights).items()}
    return {**terms, "overlap": _attention_overlap(model)}


def _attention_overlap(model: NeuroLIP) -> float:
    """Mean cosine between each subject's disease-token and sex-token attention maps
    (computed here from the forward pass, independently of the loss code)."""
    cohort, bank = _generated_batch()
    rows = cohort.text_rows
    with torch.no_grad():
        _, attention, _ = model(cohort.connectivity, cohort.region_valid, bank.vectors[rows], bank.mask[rows],
                                pairwise=False)
    disease, sex = attention[:, 0], attention[:, 1]  # token 0: diagnosis word, token 1: sex word
    cosine = (disease * sex).sum(-1) / (disease.norm(dim=-1) * sex.norm(dim=-1))
    return float(cosine.mean())


def _start() -> tuple[NeuroLIP, dict]:
    torch.manual_seed(0)
    model = NeuroLIP(N_REGIONS, TEXT_DIM, dim=16, dropout=0.0)
    cohort, bank = _generated_batch()
    model.eval()
    with torch.no_grad():
        before = {k: float(v) for k, v in batch_losses(model, cohort, bank, ["sex"], LossWeights(0.0, 0.0)).items()}
    return model, {**before, "overlap": _attention_overlap(model)}


def test_negative_gradient_raises_the_sex_calt_that_alignment_lowers():
    model, before = _start()
    negative = _after_steps(model, LossWeights(sensitive=-1.0, disentangle=0.0))
    aligned = _after_steps(model, LossWeights(sensitive=1.0, disentangle=0.0))
    assert aligned["calt_sex"] < before["calt_sex"] < negative["calt_sex"], (before, negative, aligned)
    # the diagnosis is learned either way
    assert negative["calt_diagnosis"] < before["calt_diagnosis"] and aligned["calt_diagnosis"] < before["calt_diagnosis"]


def test_disentanglement_lowers_the_overlap_of_disease_and_sex_attention():
    model, before = _start()
    disentangled = _after_steps(model, LossWeights(sensitive=1.0, disentangle=5.0))
    plain = _after_steps(model, LossWeights(sensitive=1.0, disentangle=0.0))
    assert disentangled["overlap"] < plain["overlap"] and disentangled["overlap"] < before["overlap"], (
        before, disentangled, plain)
