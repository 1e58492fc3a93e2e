"""NeuroLIP branch: functional connectivity <-> phenotype-text alignment with fairness losses.

Following NeuroLIP (Yang & Li, 2025): region-level brain embeddings from connectomes, Text
Token-Conditioned Attention (TTCA), Cross-modal Alignment via Localized Tokens (CALT), a
sensitive-attribute disentanglement loss and a negative-gradient term; evaluated on diagnosis
(zero-shot prompts and a linear probe) and fairness (demographic parity, equalised odds)
against its ablations and a connectivity + logistic-regression baseline.

Modules, in pipeline order: :mod:`~mnm.neurolip.fixture` (generated ABIDE-layout data),
:mod:`~mnm.neurolip.fetch` (nilearn fetchers), :mod:`~mnm.neurolip.connectivity`,
:mod:`~mnm.neurolip.folds`, :mod:`~mnm.neurolip.rois`, :mod:`~mnm.neurolip.data` (data stage),
:mod:`~mnm.neurolip.texts` (text stage), :mod:`~mnm.neurolip.tensors`,
:mod:`~mnm.neurolip.model`, :mod:`~mnm.neurolip.losses`, :mod:`~mnm.neurolip.train`,
:mod:`~mnm.neurolip.readout`, :mod:`~mnm.neurolip.metrics`, :mod:`~mnm.neurolip.fold`
(one training job), :mod:`~mnm.neurolip.baseline`, :mod:`~mnm.neurolip.compare`
(MNM text->brain maps) and :mod:`~mnm.neurolip.report`.
"""
