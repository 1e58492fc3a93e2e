"""Tests of the baselines: NeuroConText (CLIP) and the regression models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import logsumexp

from mnm.models.base import ResidualHead, make_encoder, pairwise_pearson
from mnm.models.neurocontext import NeuroConText
from mnm.models.regression import MLPRegression, fit_tfidf_ridge, section_texts
from mnm.scoring import read_embeddings, score_matrix
from mnm.trained import load_trained
from mnm.training.loop import Recipe
from test_train import make_inputs, run_fold


def numpy_symmetric_info_nce(logits: np.ndarray) -> float:
    """Textbook symmetric InfoNCE: mean over rows and columns of -log softmax(diagonal)."""
    n = len(logits)
    rows = -(np.diag(logits) - logsumexp(logits, axis=1))
    cols = -(np.diag(logits) - logsumexp(logits, axis=0))
    return 0.5 * (rows.sum() / n + cols.sum() / n)


def test_neurocontext_loss_equals_hand_computed_info_nce():
    torch.manual_seed(0)
    model = NeuroConText(text_dim=7, brain_dim=5, latent_dim=6, dropout=0.0, logit_scale_init=10.0)
    text = model.encode_text(torch.randn(4, 7))
    brain = model.encode_brain(torch.randn(4, 5))
    np.testing.assert_allclose(text.norm(dim=1).detach().numpy(), 1.0, rtol=1e-6)
    loss = model.loss(text, brain, None)
    cosine = text.detach().numpy() @ brain.detach().numpy().T
    assert loss["loss"].item() == pytest.approx(numpy_symmetric_info_nce(10.0 * cosine), rel=1e-5)
    assert model.log_scalars()["logit_scale"] == pytest.approx(10.0)
    assert "log_logit_scale" in model.no_decay_parameter_names()
    # The stored multiplier is clamped at the maximum after a step (not inside forward).
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert model.logit_scale.item() == pytest.approx(np.exp(10.0), rel=1e-5)
    model.clamp_parameters()
    assert model.logit_scale.item() == pytest.approx(100.0)


def test_blocks_match_their_formulas():
    torch.manual_seed(0)
    head = ResidualHead(5, dropout=0.0)
    x = torch.randn(4, 5)
    expected = torch.nn.functional.layer_norm(x + head.fc(torch.nn.functional.gelu(x)), (5,),
                                              head.layer_norm.weight, head.layer_norm.bias)
    torch.testing.assert_close(head(x), expected)
    encoder = make_encoder(3, 5, dropout=0.0)  # Linear + 3 residual blocks (NeuroConText)
    z = torch.randn(4, 3)
    hidden = encoder[0](z)
    for block in encoder[1:]:
        hidden = block(hidden)
    torch.testing.assert_close(encoder(z), hidden)
    assert [type(m).__name__ for m in encoder] == ["Linear", "ResidualHead", "ResidualHead", "ResidualHead"]
    # MNM and NeuroConText share the encoder layout, so they differ only in heads and losses
    from mnm.models.mnm import MNM

    mnm, clip = MNM(3, 4, latent_dim=5, dropout=0.3), NeuroConText(3, 4, latent_dim=5, dropout=0.3)
    assert str(mnm.text_encoder) == str(clip.text_encoder) and str(mnm.brain_encoder) == str(clip.brain_encoder)


def test_correlation_scores_match_numpy_corrcoef():
    rng = np.random.default_rng(0)
    pred, true = rng.normal(size=(6, 9)), rng.normal(size=(8, 9))
    reference = np.corrcoef(np.vstack([pred, true]))[:6, 6:]
    np.testing.assert_allclose(score_matrix("correlation", pred, true), reference, atol=1e-12)
    torch_scores = pairwise_pearson(torch.tensor(pred), torch.tensor(true)).numpy()
    np.testing.assert_allclose(torch_scores, reference, atol=1e-10)
    constant = score_matrix("correlation", np.ones((1, 9)), true)
    assert np.all(constant == 0.0)
    model = MLPRegression(9, 9)
    np.testing.assert_allclose(model.score(torch.tensor(pred), torch.tensor(true)).numpy(), reference, atol=1e-6)


def test_section_texts_and_errors():
    articles = pd.DataFrame({"article_id": [1, 2], "title": ["A", None], "abstract": ["x y", "z"]})
    texts = section_texts(articles, "title_abstract")
    assert texts.to_dict() == {"1": "A. x y", "2": "z"}
    assert section_texts(articles, "title").to_dict() == {"1": "A", "2": ""}
    with pytest.raises(KeyError, match="body"):
        section_texts(articles, "body")
    with pytest.raises(ValueError, match="unknown text section .methods."):
        section_texts(articles, "methods")


def test_tfidf_ridge_recovers_planted_word_maps():
    # Each article mentions 2 of 12 "terms"; its brain vector is the sum of those terms' maps.
    rng = np.random.default_rng(0)
    vocabulary = [f"term{i}" for i in range(12)]
    term_maps = rng.normal(size=(12, 20))
    chosen = [rng.choice(12, size=2, replace=False) for _ in range(120)]
    texts = [" ".join(vocabulary[j] for j in c) + " study results" for c in chosen]
    brain = np.stack([term_maps[c].sum(axis=0) for c in chosen]) + 0.05 * rng.normal(size=(120, 20))
    model, _ = fit_tfidf_ridge(texts[:80], brain[:80], alphas=[0.01, 0.1, 1.0], max_features=100)
    scores = score_matrix("correlation", model.predict(texts[80:]), brain[80:])
    # Pairs sharing the same two terms are indistinguishable; require the true pair in the top 3.
    top3 = np.mean([i in np.argsort(-scores[i])[:3] for i in range(40)])
    assert top3 > 0.7


def test_tfidf_ridge_dense_and_sparse_fits_agree_with_an_explicit_ridge(monkeypatch):
    """The dense copy given to RidgeCV (small vocabularies) and the sparse path (large ones)
    give the same fit; the returned fit predictions equal predicting the texts again; and
    for a fixed alpha both equal the textbook centred ridge solution."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from mnm.models import regression

    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(30)]
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 12))) for _ in range(60)]
    brain = rng.normal(size=(60, 4))
    dense, dense_fit = fit_tfidf_ridge(texts, brain, [3.0], max_features=20)
    monkeypatch.setattr(regression, "DENSE_TFIDF_BYTES", 0)
    sparse, sparse_fit = fit_tfidf_ridge(texts, brain, [3.0], max_features=20)
    np.testing.assert_allclose(dense.ridge.coef, sparse.ridge.coef, atol=1e-10)
    np.testing.assert_allclose(dense_fit, sparse_fit, atol=1e-10)
    np.testing.assert_allclose(dense.predict(texts), dense_fit, atol=1e-10)
    X = TfidfVectorizer(max_features=20, **regression.TFIDF_PARAMS).fit_transform(texts).toarray()
    Xc, Yc = X - X.mean(axis=0), brain - brain.mean(axis=0)
    coef = np.linalg.solve(Xc.T @ Xc + 3.0 * np.eye(X.shape[1]), Xc.T @ Yc).T
    np.testing.assert_allclose(dense.ridge.coef, coef, atol=1e-8)


def test_tfidf_fit_on_counted_texts_equals_scikit_learns_vectorizer_fit_on_the_texts():
    """Counting the corpus once and fitting a fold on its rows gives the vocabulary (ties at
    the max_features cut included), idf and features of TfidfVectorizer fitted on that fold's
    texts; predicting counted rows equals predicting their texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from mnm.models.regression import TFIDF_PARAMS, fit_tfidf_ridge_counts
    from mnm.text.term_counts import count_terms

    rng = np.random.default_rng(4)
    words = [f"w{i}" for i in range(80)] + ["the", "and"]  # stop words are dropped by both
    texts = [" ".join(rng.choice(words, size=rng.integers(0, 15))) for _ in range(150)]
    corpus = count_terms([f"a{i}" for i in range(150)], texts)
    fit = np.arange(0, 150, 2)  # a fold's fit rows: half the corpus, so some terms are absent
    brain = rng.normal(size=(150, 3))
    for max_features in (10, 37, 1000):
        model, fit_predictions = fit_tfidf_ridge_counts(corpus.take(fit), brain[fit], [1.0], max_features)
        reference = TfidfVectorizer(max_features=max_features, **TFIDF_PARAMS).fit([texts[i] for i in fit])
        assert model.vocabulary == {term: int(j) for term, j in reference.vocabulary_.items()}
        np.testing.assert_array_equal(model.idf, reference.idf_)
        totals = np.sort(np.asarray(corpus.take(fit).counts.sum(axis=0)).ravel())[::-1]
        if max_features < np.count_nonzero(totals):  # the cut falls between terms of equal count
            assert totals[max_features - 1] == totals[max_features]
        others = np.arange(1, 150, 2)
        np.testing.assert_allclose(model.predict_counts(corpus.take(others)),
                                   model.predict([texts[i] for i in others]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fit_predictions, model.predict([texts[i] for i in fit]), atol=1e-10)


def test_term_counts_file_round_trip_and_errors(tmp_path):
    from mnm.text.term_counts import TermCounts, count_terms, read_term_counts, write_term_counts

    counted = count_terms(["b", "a"], ["Amygdala fear fear.", "the visual cortex"])
    path = tmp_path / "text" / "term_counts" / "abstract.npz"
    write_term_counts(counted, path)
    back = read_term_counts(path)
    assert back.ids.tolist() == ["b", "a"] and back.terms.tolist() == ["amygdala", "cortex", "fear", "visual"]
    assert back.counts.toarray().tolist() == [[1, 0, 2, 0], [0, 1, 0, 1]]  # "the" is a stop word
    assert back.columns_of({"visual": 0, "fear": 1}).tolist() == [3, 2]
    with pytest.raises(KeyError, match="1 vocabulary terms were not counted"):
        back.columns_of({"visual": 0, "hippocampus": 1})
    np.savez(path, article_id=np.array(["a"]), term=np.array(["x"]))
    with pytest.raises(KeyError, match=r"abstract.npz: array\(s\) \['data', 'indices', 'indptr', 'shape'\] missing"):
        read_term_counts(path)
    with pytest.raises(FileNotFoundError, match="term_counts rule"):
        read_term_counts(tmp_path / "missing.npz")
    assert isinstance(back, TermCounts)


def test_tfidf_and_mlp_through_train_fold(tmp_path):
    paths, data = make_inputs(tmp_path, n=120)
    _, outputs = run_fold(tmp_path, paths, "tfidf", 0, {"alphas": [0.1, 1.0], "max_features": 50}, tag="tfidf")
    trained = load_trained(outputs[0]["model"])
    ids, text, brain, meta = read_embeddings(outputs[0]["test_embeddings"])
    assert meta["kind"] == "correlation" and text.shape == brain.shape
    titles = pd.read_parquet(paths["articles_path"]).set_index("article_id").loc[ids, "title"].tolist()
    np.testing.assert_allclose(trained.embed_text(titles), text, atol=1e-5)
    np.testing.assert_allclose(trained.predict_brain(titles), text, atol=1e-5)
    # the pipeline's way: the texts counted once by the term_counts rule, read by every fold
    from mnm.text.term_counts import count_section_terms

    count_section_terms(paths["articles_path"], "title", tmp_path / "counts.npz")
    _, counted = run_fold(tmp_path, paths, "tfidf", 0, {"alphas": [0.1, 1.0], "max_features": 50},
                          tag="tfidf-counted", term_counts=tmp_path / "counts.npz")
    for key in ("test_embeddings", "validation_embeddings"):
        pd.testing.assert_frame_equal(pd.read_parquet(counted[0][key]), pd.read_parquet(outputs[0][key]))

    recipe = Recipe(batch_size=16, max_epochs=15, lr=3e-3, weight_decay=0.0, patience=None)
    _, outputs = run_fold(tmp_path, paths, "mlp", 0, {"hidden_dim": 32, "dropout": 0.0}, recipe, tag="mlp")
    ids, text, brain, meta = read_embeddings(outputs[0]["test_embeddings"])
    scores = score_matrix(meta["kind"], text, brain)
    assert np.mean(scores.argmax(axis=1) == np.arange(len(ids))) > 5 / len(ids)  # chance 1 / n
    assert np.corrcoef(text.ravel(), brain.ravel())[0, 1] > 0.8
