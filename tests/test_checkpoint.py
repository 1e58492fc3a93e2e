"""Checkpoints: safetensors + JSON only; pickles are refused without being run."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from mnm.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from mnm.models.regression import fit_tfidf_ridge
from mnm.scoring import read_embeddings
from mnm.trained import load_trained
from test_train import TINY, TINY_RECIPE, make_inputs, rows_of, run_fold


class _Payload:
    """Unpickling this object would create the file named in ``__reduce__``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    for name in ("model.safetensors", "model.pt"):
        path = tmp_path / name
        torch.save({"state_dict": {}, "payload": _Payload(marker)}, path)  # a torch pickle
        with pytest.raises(CheckpointError, match="not a safetensors checkpoint.*can run code"):
            load_trained(path)
        path.write_bytes(pickle.dumps(_Payload(marker)))  # a plain pickle
        with pytest.raises(CheckpointError, match=name):
            load_checkpoint(path)
    assert not marker.exists()
    # the payload is live: unpickling it really would have run code
    pickle.loads((tmp_path / "model.pt").read_bytes())
    assert marker.exists()


def test_safetensors_without_our_document_or_with_another_format(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="metadata document"):
        load_checkpoint(path)
    save_file({"w": torch.zeros(2)}, path, metadata={"mnm": json.dumps({"format": CHECKPOINT_FORMAT + 1})})
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(path)
    save_checkpoint(path, {"w": np.arange(3.0)}, {"model_name": "ridge", "nested": {"a": [1, 2]}})
    tensors, document = load_checkpoint(path)
    assert torch.equal(tensors["w"], torch.arange(3.0, dtype=torch.float64))
    assert document["nested"] == {"a": [1, 2]} and document["format"] == CHECKPOINT_FORMAT
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("model,params", [("mnm", TINY), ("neurocontext", TINY), ("mlp", {"hidden_dim": 8}),
                                          ("ridge", {"alphas": [1.0]})])
def test_reloaded_models_embed_exactly_as_trained(tmp_path, model, params):
    paths, data = make_inputs(tmp_path, n=60)
    _, outputs = run_fold(tmp_path, paths, model, 0, params, TINY_RECIPE)
    ids, text, brain, _ = read_embeddings(outputs[0]["test_embeddings"])
    trained = load_trained(outputs[0]["model"])
    rows = rows_of(ids, data)
    np.testing.assert_allclose(trained.embed_text(data["text"][rows]), text, atol=1e-6)
    np.testing.assert_allclose(trained.embed_brain(data["brain"][rows]), brain, atol=1e-6)
    assert trained.metadata["fold"] == "0" and trained.metadata["recipe"]["batch_size"] == TINY_RECIPE.batch_size


def test_tfidf_arrays_predict_like_the_scikit_learn_pipeline():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import RidgeCV

    texts = ["working memory load in the prefrontal cortex", "visual cortex responds to faces",
             "motor sequence learning in the cerebellum", "reward prediction error in the striatum",
             "language comprehension in the temporal lobe", "pain and the insula"] * 3
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(len(texts), 5))
    ours, _ = fit_tfidf_ridge(texts, Y, [0.1, 1.0], max_features=50)
    vectorizer = TfidfVectorizer(max_features=50, stop_words="english", sublinear_tf=True, min_df=1)
    reference = RidgeCV(alphas=[0.1, 1.0]).fit(vectorizer.fit_transform(texts).toarray(), Y)
    queries = ["memory in the cortex", "faces and pain", "unseen words only"]
    expected = reference.predict(vectorizer.transform(queries).toarray())
    np.testing.assert_allclose(ours.predict(queries), expected, atol=1e-10)


def test_tfidf_model_round_trip(tmp_path):
    paths, data = make_inputs(tmp_path, n=60)
    _, outputs = run_fold(tmp_path, paths, "tfidf", 0, {"alphas": [1.0], "max_features": 30})
    ids, text, _, _ = read_embeddings(outputs[0]["test_embeddings"])
    trained = load_trained(outputs[0]["model"])
    titles = pd.read_parquet(paths["articles_path"]).set_index("article_id")["title"]
    np.testing.assert_allclose(trained.embed_text(titles.loc[ids].tolist()), text, atol=1e-6)
    with pytest.raises(TypeError, match="raw texts"):
        trained.embed_text(data["text"][:2])
