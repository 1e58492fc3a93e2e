"""Regression baselines: predict atlas coefficients from text, retrieve by correlation.

- ``ridge``: scikit-learn :class:`~sklearn.linear_model.RidgeCV` on the (standardised) text
  embeddings; its efficient leave-one-out picks the regularisation among ``alphas``. Stored
  as plain arrays (:class:`LinearMap`).
- ``mlp``: :class:`MLPRegression`, a one-hidden-layer torch MLP trained by the shared torch
  recipe (MSE loss; epoch chosen on validation retrieval like the contrastive models).
- ``tfidf``: NeuroQuery-style TF-IDF of the article section text + RidgeCV, stored as its
  vocabulary, idf weights and ridge arrays (:class:`TfidfRidge`).

Retrieval score of every regression = Pearson correlation between the predicted coefficient
vector (text side) and each candidate's true coefficient vector (brain side).
scikit-learn is imported inside the fitting functions only: a job that trains a torch model
never pays its import time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mnm.models.base import pairwise_pearson

__all__ = [
    "MLPRegression",
    "LinearMap",
    "TfidfRidge",
    "fit_ridge",
    "fit_tfidf_ridge",
    "fit_tfidf_ridge_counts",
    "select_vocabulary",
    "section_texts",
    "TFIDF_PARAMS",
]

#: TF-IDF settings (NeuroQuery-like): English stop words, sublinear term frequency.
TFIDF_PARAMS = {"stop_words": "english", "sublinear_tf": True, "min_df": 1}


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


@dataclass
class LinearMap:
    """A fitted linear regression ``Y = X @ coef.T + intercept`` as plain arrays.

    Attributes
    ----------
    coef : numpy.ndarray, shape (n_outputs, n_features)
    intercept : numpy.ndarray, shape (n_outputs,)
    alpha : float
        The regularisation RidgeCV chose.
    """

    coef: np.ndarray
    intercept: np.ndarray
    alpha: float

    def predict(self, X) -> np.ndarray:
        """Predicted outputs, float64 (``X`` dense or scipy.sparse)."""
        if hasattr(X, "tocsr"):
            return np.asarray(X @ self.coef.T) + self.intercept
        return np.asarray(X, dtype=np.float64) @ self.coef.T + self.intercept


def fit_ridge(X: np.ndarray, Y: np.ndarray, alphas) -> LinearMap:
    """Fit a multi-output :class:`~sklearn.linear_model.RidgeCV` (one alpha for all outputs).

    Parameters
    ----------
    X : array or scipy.sparse matrix, shape (n, d_text)
        Text features. A sparse matrix stays sparse: RidgeCV's leave-one-out then decomposes
        the n x n Gram matrix (n < d_text) or the d_text x d_text covariance, never a dense X.
    Y : array, shape (n, d_brain)
        Brain coefficients.
    alphas : sequence of float
        Candidate regularisation strengths (chosen by efficient leave-one-out).
    """
    from sklearn.linear_model import RidgeCV

    ridge = RidgeCV(alphas=np.asarray(alphas, dtype=float)).fit(X, Y)
    return LinearMap(np.atleast_2d(np.asarray(ridge.coef_, dtype=np.float64)),
                     np.atleast_1d(np.asarray(ridge.intercept_, dtype=np.float64)),
                     float(ridge.alpha_))


@dataclass
class TfidfRidge:
    """TF-IDF features of a text followed by a :class:`LinearMap`, stored as plain data.

    Attributes
    ----------
    vocabulary : dict
        Term -> column index of the fitted vectoriser.
    idf : numpy.ndarray
        Inverse document frequencies of those columns.
    ridge : LinearMap
        Regression from TF-IDF features to coefficients.
    """

    vocabulary: dict
    idf: np.ndarray
    ridge: LinearMap

    def vectorizer(self):
        """A scikit-learn :class:`~sklearn.feature_extraction.text.TfidfVectorizer` with this
        vocabulary and idf (no fitting; transforms exactly like the fitted one)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(vocabulary=self.vocabulary, **TFIDF_PARAMS)
        vectorizer.idf_ = np.asarray(self.idf, dtype=np.float64)
        return vectorizer

    def predict(self, texts) -> np.ndarray:
        """Predicted coefficients of raw texts, float64."""
        return self.ridge.predict(self.vectorizer().transform(list(texts)).toarray())

    def predict_counts(self, term_counts) -> np.ndarray:
        """Predicted coefficients from :class:`mnm.text.term_counts.TermCounts` (texts already
        counted: the same as :meth:`predict` of the texts, tested), float64."""
        counts = term_counts.counts[:, term_counts.columns_of(self.vocabulary)]
        return self.ridge.predict(_tfidf_transformer(self.idf).transform(counts).toarray())


#: Largest dense TF-IDF matrix (bytes, float64) handed to RidgeCV; larger ones stay sparse.
DENSE_TFIDF_BYTES = 1 << 30


def _tfidf_transformer(idf=None):
    """scikit-learn's TF-IDF weighting of :data:`TFIDF_PARAMS` (given ``idf``: already fitted)."""
    from sklearn.feature_extraction.text import TfidfTransformer

    transformer = TfidfTransformer(sublinear_tf=TFIDF_PARAMS["sublinear_tf"])
    if idf is not None:
        transformer.idf_ = np.asarray(idf, dtype=np.float64)
    return transformer


def select_vocabulary(counts_fit, max_features: int) -> np.ndarray:
    """Columns a vectoriser fitted on the fit articles' texts would keep, in its order.

    The terms present in the fit articles, in increasing order; when they are more than
    ``max_features``, the ``max_features`` with the largest total counts, picked as
    scikit-learn's ``CountVectorizer`` picks them (``argsort`` of the negated totals over the
    same array, so ties at the cut fall the same way; tested against it). Written here
    because scikit-learn offers no public way to fit on counted rows.
    """
    totals = np.asarray(counts_fit.sum(axis=0)).ravel()
    present = np.flatnonzero(totals > 0)  # counts are positive: a term is present iff counted
    if len(present) > max_features:
        keep = np.zeros(len(present), dtype=bool)
        keep[(-totals[present]).argsort()[:max_features]] = True
        present = present[keep]
    if len(present) == 0:
        raise ValueError("the fit articles' texts hold no term (empty or only stop words)")
    return present


def fit_tfidf_ridge_counts(term_counts, Y: np.ndarray, alphas,
                           max_features: int = 20000) -> tuple[TfidfRidge, np.ndarray]:
    """Fit TF-IDF (:data:`TFIDF_PARAMS`) followed by RidgeCV on counted texts.

    Parameters
    ----------
    term_counts : mnm.text.term_counts.TermCounts
        Term counts of the training articles.
    Y : array, shape (n, d_brain)
        Brain coefficients.
    alphas : sequence of float
        Candidate regularisation strengths.
    max_features : int
        Vocabulary size.

    Returns
    -------
    model : TfidfRidge
    fit_predictions : numpy.ndarray of shape (n, d_brain)
        The predictions for the training articles.
    """
    columns = select_vocabulary(term_counts.counts, int(max_features))
    transformer = _tfidf_transformer()
    features = transformer.fit_transform(term_counts.counts[:, columns])
    # RidgeCV fits a sparse matrix as it fits the dense one, but its sparse path was 5 times
    # slower at 17,600 articles x 2,000 features (64 s against 13 s, coefficients equal to
    # 1e-15; benchmarks/scale.md); a dense copy is taken while it stays under
    # DENSE_TFIDF_BYTES (at the default 20,000 features and 18,000 articles it would be 2.9 GB).
    if features.shape[0] * features.shape[1] * 8 <= DENSE_TFIDF_BYTES:
        features = features.toarray()
    vocabulary = {str(term): index for index, term in enumerate(term_counts.terms[columns])}
    tfidf = TfidfRidge(vocabulary, np.asarray(transformer.idf_, dtype=np.float64), fit_ridge(features, Y, alphas))
    return tfidf, tfidf.ridge.predict(features)


def fit_tfidf_ridge(texts, Y: np.ndarray, alphas, max_features: int = 20000) -> tuple[TfidfRidge, np.ndarray]:
    """:func:`fit_tfidf_ridge_counts` of raw texts (counted here)."""
    from mnm.text.term_counts import count_terms

    texts = list(texts)
    return fit_tfidf_ridge_counts(count_terms(np.arange(len(texts)), texts), Y, alphas, max_features)


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
