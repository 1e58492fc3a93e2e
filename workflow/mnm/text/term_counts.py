"""Per-article term counts of one text section: the TF-IDF baseline's tokens, counted once.

Every TF-IDF training job (10 folds x sections, plus fold "all") used to tokenise the whole
corpus again; at 20,000 articles of 4,000-word bodies that was about 40 CPU s per job.
The text stage now counts the terms of every article once (scikit-learn's
:class:`~sklearn.feature_extraction.text.CountVectorizer` with the TF-IDF model's analyser,
no pruning) and each fold picks its vocabulary from the rows of its fit articles
(:func:`mnm.models.regression.fit_tfidf_ridge_counts`), which gives the vectoriser a fit on
those articles' texts would give (tested).

File format (``text/term_counts/{section}.npz``, read with ``allow_pickle=False``: plain
arrays only): ``article_id`` and ``term`` (unicode), and the CSR matrix of counts as
``data``, ``indices``, ``indptr``, ``shape`` (int64).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from mnm.io import atomic_path

__all__ = ["TermCounts", "count_terms", "count_section", "write_term_counts", "read_term_counts",
           "count_section_terms"]

_KEYS = ("article_id", "term", "data", "indices", "indptr", "shape")


@dataclass
class TermCounts:
    """Term counts of a set of articles.

    Attributes
    ----------
    ids : numpy.ndarray of str
        Article of each row.
    terms : numpy.ndarray of str
        Term of each column, in increasing order (the vectoriser's).
    counts : scipy.sparse.csr_matrix of int64, shape (n_articles, n_terms)
    """

    ids: np.ndarray
    terms: np.ndarray
    counts: sparse.csr_matrix

    def take(self, rows) -> TermCounts:
        """The articles at positions ``rows``, in that order."""
        rows = np.asarray(rows)
        return TermCounts(self.ids[rows], self.terms, self.counts[rows])

    def columns_of(self, vocabulary: dict) -> np.ndarray:
        """Column of each term of ``vocabulary`` (term -> index), ordered by that index.

        Raises
        ------
        KeyError
            If a term was never counted (a vocabulary from another corpus).
        """
        ordered = np.array(sorted(vocabulary, key=vocabulary.get), dtype=self.terms.dtype)
        columns = np.searchsorted(self.terms, ordered)
        found = columns < len(self.terms)
        found[found] = self.terms[columns[found]] == ordered[found]
        if not found.all():
            raise KeyError(f"{int((~found).sum())} vocabulary terms were not counted, e.g. "
                           f"{ordered[~found][:3].tolist()}")
        return columns


def count_terms(ids, texts) -> TermCounts:
    """Count the terms of each text with the TF-IDF model's analyser (no pruning)."""
    from sklearn.feature_extraction.text import CountVectorizer

    from mnm.models.regression import TFIDF_PARAMS

    analyser = {key: value for key, value in TFIDF_PARAMS.items() if key != "sublinear_tf"}
    vectorizer = CountVectorizer(**analyser)
    counts = vectorizer.fit_transform(list(texts)).tocsr()
    return TermCounts(np.asarray(ids).astype(str), vectorizer.get_feature_names_out().astype(str), counts)


def write_term_counts(term_counts: TermCounts, path) -> None:
    """Write ``term_counts`` atomically (format in the module docstring)."""
    counts = term_counts.counts.tocsr()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, article_id=term_counts.ids.astype(str), term=term_counts.terms.astype(str),
                     data=counts.data.astype(np.int64), indices=counts.indices.astype(np.int64),
                     indptr=counts.indptr.astype(np.int64), shape=np.asarray(counts.shape, dtype=np.int64))


def read_term_counts(path) -> TermCounts:
    """Read a file of :func:`write_term_counts` (plain arrays; never unpickles).

    Raises
    ------
    FileNotFoundError, KeyError, ValueError
        Missing file; missing array (named); arrays that disagree in size.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found (has the term_counts rule run?)")
    with np.load(path, allow_pickle=False) as stored:
        missing = [key for key in _KEYS if key not in stored.files]
        if missing:
            raise KeyError(f"{path}: array(s) {missing} missing")
        arrays = {key: stored[key] for key in _KEYS}
    shape = tuple(int(n) for n in arrays["shape"])
    if shape != (len(arrays["article_id"]), len(arrays["term"])):
        raise ValueError(f"{path}: counts of shape {shape} for {len(arrays['article_id'])} articles and "
                         f"{len(arrays['term'])} terms")
    counts = sparse.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
    return TermCounts(arrays["article_id"].astype(str), arrays["term"].astype(str), counts)


def count_section(articles, section: str) -> TermCounts:
    """Term counts of one section of every article of an articles table (the texts the TF-IDF
    model reads, :func:`mnm.models.regression.section_texts`)."""
    from mnm.models.regression import section_texts

    texts = section_texts(articles, section)
    return count_terms(texts.index.to_numpy(), texts.to_numpy())


def count_section_terms(articles_path, section: str, out) -> TermCounts:
    """:func:`count_section` of ``corpus/articles.parquet``, written to ``out``."""
    from mnm.io import read_parquet
    from mnm.text.sections import article_columns

    term_counts = count_section(read_parquet(articles_path, article_columns(section)), section)
    write_term_counts(term_counts, out)
    return term_counts
