"""Retrieval scores of stored embeddings, and the test-embedding files every metric reads.

One implementation of each score, shared by the models (torch, during training) and the
evaluation (numpy in, numpy out, computed in float64 with the same torch functions):

* ``angle`` (MNM variants): ``-|exterior angle|`` on the hyperboloid, measured at the brain
  point towards the text point (``angle_apex="brain"``) or the reverse;
* ``cosine`` (NeuroConText): dot product of L2-normalised vectors;
* ``correlation`` (regressions): Pearson correlation of predicted and true coefficients.

``test_embeddings.parquet`` holds the embeddings *as the model scores them* plus the metadata
needed to score them again (``score_kind``, ``curvature``, ``angle_apex``), so every metric
can be recomputed without the model.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from mnm import lorentz
from mnm.io import read_matrix, read_parquet, vectors_to_arrow, write_parquet_tables

__all__ = [
    "SCORE_KINDS",
    "angle_scores",
    "score_matrix",
    "write_embeddings",
    "write_embedding_blocks",
    "read_embeddings",
    "radii",
]

SCORE_KINDS = ("angle", "cosine", "correlation")


def angle_scores(text: Tensor, brain: Tensor, c: Tensor | float, apex: str = "brain",
                 eps: float = 1e-6) -> Tensor:
    """``-|exterior angle|`` between every text (rows) and brain point (columns).

    Parameters
    ----------
    text, brain : Tensor, shapes (n_text, d) and (n_brain, d)
        Space components on the hyperboloid of curvature ``-c``.
    c : float or Tensor
        Curvature magnitude.
    apex : {"brain", "text"}
        Where the angle is measured: at the brain point towards the text point (MNM) or at
        the text point towards the brain point (MNM-Reverse).
    eps : float
        Clamp margin of :func:`mnm.lorentz.pairwise_exterior_angle` (1e-6 suits float32
        training; :func:`score_matrix` uses 1e-10 in float64).
    """
    if apex == "brain":
        return -lorentz.pairwise_exterior_angle(brain, text, c, eps).T.abs()
    if apex == "text":
        return -lorentz.pairwise_exterior_angle(text, brain, c, eps).abs()
    raise ValueError(f"angle_apex must be 'brain' or 'text', got {apex!r}")


def score_matrix(kind: str, text_emb, brain_emb, curvature: float | None = None,
                 angle_apex: str = "brain", **_) -> np.ndarray:
    """Retrieval scores ``(n_text, n_brain)`` (higher = better) of stored embeddings, float64.

    Parameters
    ----------
    kind : {"angle", "cosine", "correlation"}
        See the module docstring.
    text_emb, brain_emb : array
        Rows as stored in ``test_embeddings.parquet``.
    curvature : float, optional
        Curvature ``c`` for ``angle``.
    angle_apex : {"brain", "text"}
        Where the angle is measured.
    **_
        Other metadata keys are ignored, so ``score_matrix(**meta, ...)`` works.
    """
    from mnm.models.base import pairwise_pearson

    text = torch.as_tensor(np.array(text_emb, dtype=np.float64))  # a writable copy
    brain = torch.as_tensor(np.array(brain_emb, dtype=np.float64))
    if kind == "cosine":
        scores = text @ brain.T
    elif kind == "correlation":
        scores = pairwise_pearson(text, brain)
    elif kind == "angle":
        if curvature is None or not curvature > 0:
            raise ValueError(f"angle scores need a positive curvature, got {curvature}")
        scores = angle_scores(text, brain, float(curvature), angle_apex, eps=1e-10)
    else:
        raise ValueError(f"unknown score kind {kind!r}; expected one of {SCORE_KINDS}")
    return scores.numpy()


def radii(space, curvature: float) -> np.ndarray:
    """Geodesic distance to the origin of hyperboloid points (float64)."""
    return lorentz.distance0(torch.as_tensor(np.array(space, dtype=np.float64)),
                             float(curvature)).numpy()


def write_embeddings(path, ids, text, brain, n_active, score_kind: str,
                     curvature: float | None, angle_apex: str) -> None:
    """Write a ``test_embeddings.parquet``-shaped table (also used for validation sets)."""
    write_embedding_blocks(path, [(ids, text, brain, n_active)], score_kind, curvature, angle_apex)


def write_embedding_blocks(path, blocks, score_kind: str, curvature: float | None,
                           angle_apex: str) -> None:
    """:func:`write_embeddings` for ``blocks`` of ``(ids, text, brain, n_active)``, one row
    group each, so that the embeddings of every article (Text2Brain's are voxel maps: 2.35 GB
    per matrix at 20,000 articles) never sit in memory at once."""
    write_parquet_tables((_embeddings_table(*block, score_kind, curvature, angle_apex) for block in blocks),
                         path)


def _embeddings_table(ids, text, brain, n_active, score_kind, curvature, angle_apex) -> pa.Table:
    n = len(ids)
    return pa.table({
        "article_id": pa.array([str(i) for i in ids], pa.string()),
        "text": vectors_to_arrow(np.asarray(text, dtype=np.float32).reshape(n, -1)),
        "brain": vectors_to_arrow(np.asarray(brain, dtype=np.float32).reshape(n, -1)),
        "n_active": pa.array(np.asarray(n_active, dtype=np.float32)),
        "score_kind": pa.array([score_kind] * n, pa.string()),
        "curvature": pa.array([np.nan if curvature is None else float(curvature)] * n, pa.float64()),
        "angle_apex": pa.array([angle_apex or ""] * n, pa.string()),
    })


def read_embeddings(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Read a file written by :func:`write_embeddings` -> ``(ids, text, brain, meta)``.

    ``meta`` holds ``kind``, ``curvature``, ``angle_apex`` and ``n_active``:
    ``score_matrix(meta["kind"], text, brain, **meta)`` rescores the pairs.
    """
    ids, text = read_matrix(path, "text")
    _, brain = read_matrix(path, "brain")
    table = read_parquet(path, columns=["score_kind", "curvature", "angle_apex", "n_active"])
    if table.empty:
        return ids, text, brain, {"kind": None, "curvature": None, "angle_apex": "brain",
                                  "n_active": np.zeros(0)}
    curvature = float(table["curvature"].iloc[0])
    meta = {
        "kind": str(table["score_kind"].iloc[0]),
        "curvature": None if math.isnan(curvature) else curvature,
        "angle_apex": str(table["angle_apex"].iloc[0]) or "brain",
        "n_active": table["n_active"].to_numpy(dtype=np.float64),
    }
    return ids, text, brain, meta
