"""Stage outputs (Parquet) -> the tensors NeuroLIP trains on.

:class:`Cohort` holds every subject's connectome (full ``R x R`` matrix, zero diagonal),
valid-region mask, attribute codes and the row of its text in the :class:`TokenBank`. The
bank keeps, for every text, only the tokens of the slots the losses use (the diagnosis and
the sensitive attributes), padded to the longest such token list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mnm.io import read_matrix, read_parquet
from mnm.neurolip.connectivity import vector_to_matrix
from mnm.neurolip.texts import SLOTS, age_group

__all__ = ["TokenBank", "Cohort", "load_token_bank", "load_cohort", "SENSITIVE_CHOICES"]

SENSITIVE_CHOICES = tuple(s for s in SLOTS if s != "diagnosis")


@dataclass
class TokenBank:
    """Padded token vectors of the texts, restricted to the slots ``slots``.

    Attributes
    ----------
    text_ids : numpy.ndarray ``(T,)``
    vectors : Tensor ``(T, K, D)``
    mask : Tensor ``(T, K)`` bool
    slot_codes : Tensor ``(T, K)`` int, index into ``slots`` (-1 for padding)
    tokens : numpy.ndarray ``(T, K)`` of str (``""`` for padding)
    slots : tuple of str
    prompt_rows : numpy.ndarray
        Row of the zero-shot prompt of diagnosis 0 and of diagnosis 1.
    """

    text_ids: np.ndarray
    vectors: torch.Tensor
    mask: torch.Tensor
    slot_codes: torch.Tensor
    tokens: np.ndarray
    slots: tuple
    prompt_rows: np.ndarray

    def slot_mask(self, slot: str, rows=None) -> torch.Tensor:
        """``(T, K)`` (or the given rows) bool mask of the tokens of ``slot``."""
        codes = self.slot_codes if rows is None else self.slot_codes[rows]
        return codes == self.slots.index(slot)


def load_token_bank(texts_path, tokens_path, slots) -> TokenBank:
    """Read ``texts.parquet`` and ``tokens.parquet`` into a :class:`TokenBank`."""
    texts = read_parquet(texts_path)
    text_ids, vectors = read_matrix(tokens_path, id_column="text_id")
    meta = read_parquet(tokens_path, columns=["text_id", "position", "token", "slot"])
    keep = meta["slot"].isin(slots).to_numpy()
    meta, vectors = meta[keep].reset_index(drop=True), vectors[keep]
    row_of = {t: i for i, t in enumerate(texts["text_id"])}
    rows = meta["text_id"].map(row_of).to_numpy()
    if np.isnan(rows.astype(float)).any():
        raise ValueError(f"{tokens_path}: tokens of texts missing from {texts_path}")
    rows = rows.astype(np.int64)
    order = np.lexsort((meta["position"].to_numpy(), rows))
    rows, meta, vectors = rows[order], meta.iloc[order].reset_index(drop=True), vectors[order]
    counts = np.bincount(rows, minlength=len(texts))
    width = max(int(counts.max()), 1)
    column = np.arange(len(rows)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[rows]
    padded = np.zeros((len(texts), width, vectors.shape[1]), dtype=np.float32)
    padded[rows, column] = vectors
    codes = np.full((len(texts), width), -1, dtype=np.int64)
    codes[rows, column] = meta["slot"].map({s: i for i, s in enumerate(slots)}).to_numpy()
    tokens = np.full((len(texts), width), "", dtype=object)
    tokens[rows, column] = meta["token"].to_numpy()
    prompts = texts[texts["kind"] == "prompt"].sort_values("diagnosis")
    if prompts["diagnosis"].tolist() != [0, 1]:
        raise ValueError(f"{texts_path}: expected one prompt per diagnosis value 0 and 1")
    return TokenBank(texts["text_id"].to_numpy(), torch.from_numpy(padded), torch.from_numpy(codes >= 0),
                     torch.from_numpy(codes), tokens, tuple(slots), prompts.index.to_numpy())


@dataclass
class Cohort:
    """Subjects as tensors (see the module docstring).

    Attributes
    ----------
    subjects : pandas.DataFrame
        The subjects table (``subject_id``, ``diagnosis``, ``sex``, ``site``, ``age``, ...).
    connectivity : Tensor ``(N, R, R)``
    region_valid : Tensor ``(N, R)`` bool
    codes : dict of str -> Tensor ``(N,)``
        Integer code of each attribute (``diagnosis`` and the sensitive ones).
    text_rows : Tensor ``(N,)``
        Row of each subject's text in the token bank.
    """

    subjects: pd.DataFrame
    connectivity: torch.Tensor
    region_valid: torch.Tensor
    codes: dict
    text_rows: torch.Tensor

    def __len__(self) -> int:
        return len(self.subjects)

    def subset(self, ids) -> "Cohort":
        """The subjects ``ids`` (in that order)."""
        position = pd.Series(np.arange(len(self)), index=self.subjects["subject_id"].to_numpy())
        index = torch.tensor(position.loc[list(ids)].to_numpy(np.int64))
        return Cohort(self.subjects.iloc[index.numpy()].reset_index(drop=True), self.connectivity[index],
                      self.region_valid[index], {k: v[index] for k, v in self.codes.items()},
                      self.text_rows[index])


def load_cohort(data_dir, bank: TokenBank, sensitive) -> Cohort:
    """Read ``subjects``, ``connectivity`` and ``subject_texts`` Parquet files of ``data_dir``."""
    data_dir = Path(data_dir)
    unknown = sorted(set(sensitive) - set(SENSITIVE_CHOICES))
    if unknown:
        raise ValueError(f"neurolip.sensitive: unknown attribute(s) {unknown} (choose from {SENSITIVE_CHOICES})")
    subjects = read_parquet(data_dir / "subjects.parquet")
    ids, vectors = read_matrix(data_dir / "connectivity.parquet", column="connectivity", id_column="subject_id")
    _, valid = read_matrix(data_dir / "connectivity.parquet", column="region_valid", id_column="subject_id")
    if list(ids) != subjects["subject_id"].tolist():
        raise ValueError(f"{data_dir}: connectivity.parquet and subjects.parquet list different subjects")
    texts = read_parquet(data_dir / "subject_texts.parquet").set_index("subject_id")["text_id"]
    row_of = {t: i for i, t in enumerate(bank.text_ids)}
    text_rows = subjects["subject_id"].map(texts).map(row_of)
    if text_rows.isna().any():
        missing = subjects.loc[text_rows.isna(), "subject_id"].head(5).tolist()
        raise ValueError(f"{data_dir}/subject_texts.parquet: no text for subject(s) {missing}")
    values = subjects.assign(age_group=[age_group(a) for a in subjects["age"]])
    codes = {name: torch.as_tensor(pd.factorize(values[name].astype(str), sort=True)[0])
             for name in ["diagnosis", *sensitive]}
    return Cohort(subjects, torch.from_numpy(vector_to_matrix(vectors)), torch.from_numpy(valid > 0.5),
                  codes, torch.tensor(text_rows.to_numpy(np.int64)))
