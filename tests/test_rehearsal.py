"""The rehearsal's tiny Mistral (mnm.rehearsal): architecture, tokenizer coverage of the
generated corpus, 8,192-token windows through the text stage's encoder."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mnm import generated_pubget as gp
from mnm.rehearsal import TINY_MISTRAL, build_tiny_mistral, piece_pattern
from mnm.text import Encoder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_mistral(tmp_path_factory.mktemp("tiny") / "tiny_mistral_generated", seed=0)


@pytest.fixture(scope="module")
def encoder(model_dir):
    return Encoder.from_config({"model": str(model_dir), "window": 8192, "batch_tokens": 8192}, device="cpu")


def test_a_mistral_saved_as_safetensors_and_labelled_generated(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "mistral" and config["architectures"] == ["MistralModel"]
    assert {k: config[k] for k in TINY_MISTRAL} == TINY_MISTRAL
    assert (model_dir / "model.safetensors").is_file() and not list(model_dir.glob("*.bin"))
    assert "Generated model" in (model_dir / "README.md").read_text()


def test_tokenizer_covers_generated_text_with_mistral_like_lengths(encoder, tmp_path):
    folder = gp.write_generated_pubget(tmp_path, 5, seed=1)
    import pandas as pd

    text = pd.read_csv(folder / "text.csv", dtype=str, keep_default_na=False)
    bodies = text["body"].tolist()
    ids = encoder.tokenize(bodies + text["title"].tolist() + text["abstract"].tolist())
    assert encoder.tokenizer.unk_token_id not in {i for row in ids for i in row}
    # the same pieces as the documented pattern, counted independently with Python's re
    pattern = re.compile(piece_pattern(7))
    assert [len(row) for row in ids[:5]] == [len(pattern.findall(b)) for b in bodies]
    tokens_per_word = sum(map(len, ids[:5])) / sum(len(b.split()) for b in bodies)
    assert 1.2 < tokens_per_word < 1.7  # Mistral's tokenizer: ~1.3-1.5 on scientific English
    assert encoder.prefix == [encoder.tokenizer.bos_token_id] and encoder.suffix == []


def test_long_body_takes_two_8192_token_windows(encoder):
    """A 9,000-token text: two windows (<s> + 8,191 tokens, <s> + 809), pooled as the mean of
    the two L2-normalised window means, computed here with the model alone."""
    content = encoder.tokenize([" ".join(["working memory"] * 4500)])[0]
    assert len(content) == 9000
    windows = encoder.windows(content)
    assert [len(w) for w in windows] == [8192, 810] and all(w[0] == encoder.prefix[0] for w in windows)
    calls = []
    forward = encoder.model.forward
    encoder.model.forward = lambda *args, **kwargs: calls.append(kwargs) or forward(*args, **kwargs)
    try:
        vector = encoder.embed_token_ids([content])[0]
    finally:
        encoder.model.forward = forward
    assert calls and all(call["use_cache"] is False for call in calls)  # no key/value cache kept
    with torch.inference_mode():
        pooled = [encoder.model(input_ids=torch.tensor([w])).last_hidden_state[0].mean(0) for w in windows]
    expected = torch.stack([p / p.norm() for p in pooled]).mean(0).numpy()
    np.testing.assert_allclose(vector, expected, rtol=1e-4, atol=1e-6)


def test_same_seed_same_weights(model_dir, tmp_path):
    from safetensors.numpy import load_file

    again = build_tiny_mistral(tmp_path / "again", seed=0)
    first, second = (load_file(d / "model.safetensors") for d in (model_dir, again))
    assert sorted(first) == sorted(second) and all(np.array_equal(first[k], second[k]) for k in first)
    assert first["embed_tokens.weight"].std() > 0  # random weights, not zeros
    assert (again / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()
