"""Regression baselines: predict atlas coefficients from text, retrieve by correlation.

- ``ridge``: scikit-learn :class:`~sklearn.linear_model.RidgeCV` on the (standardised) text
  embeddings; its efficient leave-one-out picks the regularisation among ``alphas``.
- ``mlp``: :class:`MLPRegression`, a one-hidden-layer torch MLP trained by the shared loop of
  :mod:`mnm.train` (MSE loss; epoch chosen on validation retrieval like the contrastive models).
- ``tfidf``: NeuroQuery-style TF-IDF of the article section text + RidgeCV.

Retrieval score of every regression = Pearson correlation between the predicted coefficient
vector (text side) and each candidate's true coefficient vector (brain side).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline
from torch import nn

from mnm.models.base import pairwise_pearson

__all__ = [
    "MLPRegression",
    "fit_ridge",
    "fit_tfidf_ridge",
    "section_texts",
    "pearson_score_matrix",
    "SECTIONS",
]

SECTIONS = ("title", "abstract", "body", "title_abstract")


class MLPRegression(nn.Module):
    """One-hidden-layer MLP from text features to brain coefficients (trainer protocol).

    Parameters
    ----------
    text_dim, brain_dim : int
        Input and output dimensions.
    hidden_dim : int
        Width of the hidden layer.
    dropout : float
        Dropout after the hidden activation.
    """

    def __init__(self, text_dim: int, brain_dim: int, hidden_dim: int = 512, dropout: float = 0.1):
        super().__init__()
        self.network = nn.Sequential(
            nn.Linear(text_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, brain_dim)
        )

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted coefficients ``(n, brain_dim)``."""
        return self.network(x)

    def encode_brain(self, y: torch.Tensor) -> torch.Tensor:
        """The true coefficients themselves (the regression target)."""
        return y

    def score(self, text_emb: torch.Tensor, brain_emb: torch.Tensor) -> torch.Tensor:
        """Pearson correlation of predicted vs candidate coefficients ``(n_text, n_brain)``."""
        return pairwise_pearson(text_emb, brain_emb)

    def loss(self, text_emb: torch.Tensor, brain_emb: torch.Tensor, n_active=None) -> dict:
        """Mean squared error between predicted and true coefficients."""
        mse = F.mse_loss(text_emb, brain_emb)
        return {"loss": mse, "mse": mse.detach()}

    def no_decay_parameter_names(self) -> set:
        """No special parameters."""
        return set()

    def log_scalars(self) -> dict:
        """Nothing to log."""
        return {}


def fit_ridge(X: np.ndarray, Y: np.ndarray, alphas) -> RidgeCV:
    """Fit a multi-output :class:`~sklearn.linear_model.RidgeCV` (one alpha for all outputs).

    Parameters
    ----------
    X : array, shape (n, d_text)
        Standardised text features.
    Y : array, shape (n, d_brain)
        Brain coefficients.
    alphas : sequence of float
        Candidate regularisation strengths (chosen by efficient leave-one-out).
    """
    return RidgeCV(alphas=np.asarray(alphas, dtype=float)).fit(X, Y)


def fit_tfidf_ridge(texts, Y: np.ndarray, alphas, max_features: int = 20000) -> Pipeline:
    """Fit TF-IDF (NeuroQuery-like: English stop words, sublinear tf) followed by RidgeCV.

    Parameters
    ----------
    texts : sequence of str
        Section text of each training article.
    Y : array, shape (n, d_brain)
        Brain coefficients.
    alphas : sequence of float
        Candidate regularisation strengths.
    max_features : int
        Vocabulary size.

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``predict(texts)`` returns coefficients.
    """
    pipeline = Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    max_features=int(max_features), stop_words="english", sublinear_tf=True, min_df=1
                ),
            ),
            ("ridge", RidgeCV(alphas=np.asarray(alphas, dtype=float))),
        ]
    )
    return pipeline.fit(list(texts), Y)


def section_texts(articles: pd.DataFrame, section: str) -> pd.Series:
    """Text of one section per article, indexed by ``article_id`` (missing -> empty string).

    The same texts the text stage embeds (:func:`mnm.text.sections.section_texts`), so the
    TF-IDF baseline and the embedding models read identical inputs.
    """
    from mnm.text.sections import section_texts as texts_of_section

    if "article_id" not in articles.columns:
        raise KeyError("articles table lacks column 'article_id'")
    try:
        texts = texts_of_section(articles, section)
    except ValueError as error:
        raise KeyError(str(error)) if "missing column" in str(error) else error
    return pd.Series([t or "" for t in texts],
                     index=articles["article_id"].astype(str).to_numpy(), dtype=object)


def pearson_score_matrix(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """NumPy Pearson correlation of every predicted row with every true row (float64).

    Constant rows get correlation 0 rather than NaN.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    pred = pred - pred.mean(axis=1, keepdims=True)
    true = true - true.mean(axis=1, keepdims=True)
    pred_norm = np.linalg.norm(pred, axis=1, keepdims=True)
    true_norm = np.linalg.norm(true, axis=1, keepdims=True)
    pred = np.divide(pred, pred_norm, out=np.zeros_like(pred), where=pred_norm > 0)
    true = np.divide(true, true_norm, out=np.zeros_like(true), where=true_norm > 0)
    return pred @ true.T
