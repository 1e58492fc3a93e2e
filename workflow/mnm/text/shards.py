"""Scatter/gather of the embedding stage: one job per shard of articles, then one gather.

Shard file (``text/{encoder}/{section}/shards/shard-{i}.parquet``): article_id, embedding
(``list<float32>``, null for articles without a vector) and reason (null for embedded
articles, else why there is no vector). The gather splits them into ``embeddings.parquet``
(article_id, embedding) and ``qc.parquet`` (article_id, reason), in corpus order, after
checking that every article of the corpus is in exactly one of the two.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mnm.io import read_parquet, write_parquet
from mnm.text.cache import EmbeddingCache, text_hash
from mnm.text.encoder import EmbedProgress, Encoder, plan_batches
from mnm.text.sections import article_columns, section_texts

logger = logging.getLogger(__name__)

REASON_EMPTY = "empty section"
REASON_NO_TOKENS = "no tokens"
#: Texts tokenized at a time by :func:`embed_shard`.
TOKENIZE_BLOCK = 1024


def shard_of(article_id: str, n_shards: int) -> int:
    """Shard of an article: SHA-1 of its id modulo ``n_shards``.

    Stable across runs and machines (unlike :func:`hash`), and adding articles never
    moves existing ones to another shard.
    """
    if n_shards < 1:
        raise ValueError(f"text.n_shards must be >= 1, got {n_shards}")
    return int(hashlib.sha1(str(article_id).encode()).hexdigest()[:12], 16) % n_shards


def read_articles(articles_path, section: str) -> pd.DataFrame:
    """article_id plus the columns ``section`` needs, with ids checked (non-null, unique)."""
    path = Path(articles_path)
    schema_names = pq.read_schema(path).names if path.exists() else []
    columns = article_columns(section)
    missing = [c for c in columns if c not in schema_names]
    if path.exists() and missing:
        raise ValueError(f"{path}: missing column(s) {missing} needed for text section {section!r}")
    articles = read_parquet(path, columns=columns)
    if articles["article_id"].isna().any():
        rows = np.flatnonzero(articles["article_id"].isna().to_numpy())[:5].tolist()
        raise ValueError(f"{path}: null article_id in row(s) {rows}")
    articles["article_id"] = articles["article_id"].astype(str)
    duplicated = articles["article_id"][articles["article_id"].duplicated()].unique()[:5].tolist()
    if duplicated:
        raise ValueError(f"{path}: duplicated article_id(s) {duplicated}")
    return articles


def shard_table(article_ids: list[str], vectors: dict[str, np.ndarray], reasons: dict[str, str], dim: int) -> pa.Table:
    """Arrow table of a shard: embedding null where a reason is given, in ``article_ids`` order."""
    has_vector = np.array([a in vectors for a in article_ids], dtype=bool)
    matrix = np.zeros((len(article_ids), dim), dtype=np.float32)
    for row, article in enumerate(article_ids):
        if has_vector[row]:
            matrix[row] = vectors[article]
    lengths = np.where(has_vector, dim, 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    embedding = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(matrix[has_vector].ravel(), pa.float32()), mask=pa.array(~has_vector)
    )
    return pa.table({
        "article_id": pa.array(article_ids, pa.string()),
        "embedding": embedding,
        "reason": pa.array([reasons.get(a) for a in article_ids], pa.string()),
    })


def embed_shard(
    articles_path,
    output_path,
    *,
    encoder_cfg: dict,
    section: str,
    shard: int,
    n_shards: int,
    cache_dir,
    device: str = "auto",
    threads: int | None = None,
    checkpoint_every: int = 64,
    checkpoint_seconds: float = 30.0,
    encoder: Encoder | None = None,
) -> dict:
    """Embed one shard of articles, reusing and filling the per-text cache.

    Parameters
    ----------
    articles_path : path-like
        ``corpus/articles.parquet``.
    output_path : path-like
        Shard Parquet (article_id, embedding, reason), written atomically at the end.
    encoder_cfg : dict
        One ``text.encoders.<name>`` entry (see :meth:`Encoder.from_config`).
    section : str
        title, abstract, body or title_abstract.
    shard, n_shards : int
        This shard's index and the number of shards (see :func:`shard_of`).
    cache_dir : path-like
        Cache root for this encoder (the fingerprint sub-folder is added).
    device : str
        auto, cpu or cuda.
    threads : int, optional
        torch CPU threads.
    checkpoint_every, checkpoint_seconds : int, float
        The per-text cache is flushed after every forward batch that brings the unflushed
        texts to ``checkpoint_every`` or that ends ``checkpoint_seconds`` after the last flush,
        whichever comes first: a killed job loses at most that much work.
    encoder : Encoder, optional
        An already built encoder (tests); else built from ``encoder_cfg``.

    Returns
    -------
    dict
        articles (in the shard), cached (articles whose text needed no model run), embedded
        (distinct texts run through the model), qc (articles without a vector), tokens_per_s.
    """
    import torch

    if not 0 <= int(shard) < int(n_shards):
        raise ValueError(f"shard {shard} is outside 0..{int(n_shards) - 1} (text.n_shards = {n_shards})")
    if threads:
        torch.set_num_threads(int(threads))
    articles = read_articles(articles_path, section)
    in_shard = np.array([shard_of(a, n_shards) == int(shard) for a in articles["article_id"]], dtype=bool)
    articles = articles[in_shard].reset_index(drop=True)
    texts = section_texts(articles, section, source=str(articles_path))
    ids = articles["article_id"].tolist()

    reasons = {a: REASON_EMPTY for a, t in zip(ids, texts) if t is None}
    keyed = {a: text_hash(t) for a, t in zip(ids, texts) if t is not None}
    encoder = encoder or Encoder.from_config(encoder_cfg, device=device)
    cache = EmbeddingCache(cache_dir, encoder.fingerprint, description={
        "model": encoder.model_name, "revision": encoder.revision, "window": encoder.window,
        "dtype": str(encoder.dtype), "fingerprint": encoder.fingerprint,
    })
    by_hash = cache.lookup(keyed.values())
    text_of = {keyed[a]: t for a, t in zip(ids, texts) if t is not None}
    todo = [h for h in dict.fromkeys(keyed.values()) if h not in by_hash]
    logger.info("%s shard %d/%d: %d articles, %d empty, %d cached, %d to embed",
                section, shard, n_shards, len(ids), len(reasons), len(keyed) - len(todo), len(todo))

    no_tokens: set[str] = set()
    flusher = _Flusher(cache, by_hash, f"{section}-shard{shard}", checkpoint_every, checkpoint_seconds)
    progress = EmbedProgress(total=len(todo), desc=f"{section} shard {shard}")
    try:
        # Tokenized a block at a time (full-text token lists of a whole shard would not fit
        # in memory at paper scale); forward batches are planned by token budget in a block.
        for start in range(0, len(todo), TOKENIZE_BLOCK):
            block = todo[start:start + TOKENIZE_BLOCK]
            tokens = encoder.tokenize([text_of[h] for h in block])
            no_tokens.update(h for h, t in zip(block, tokens) if len(t) == 0)
            usable = [i for i, t in enumerate(tokens) if len(t) > 0]
            progress.advance(len(block) - len(usable), 0)
            for batch in plan_batches([len(tokens[i]) for i in usable], encoder.batch_tokens):
                rows = [usable[b] for b in batch]
                flusher.add([block[i] for i in rows],
                            encoder.embed_token_ids([tokens[i] for i in rows], progress=progress))
    finally:
        progress.close()
    flusher.flush()

    for article, h in keyed.items():
        if h in no_tokens:
            reasons[article] = REASON_NO_TOKENS
    vectors = {a: by_hash[h] for a, h in keyed.items() if h not in no_tokens}
    write_parquet(shard_table(ids, vectors, reasons, encoder.dim), output_path)
    stats = {"articles": len(ids), "cached": len(keyed) - len(todo), "embedded": len(todo) - len(no_tokens),
             "qc": len(reasons), "tokens_per_s": round(progress.tokens_per_second)}
    logger.info("%s shard %d done: %s", section, shard, stats)
    return stats


class _Flusher:
    """Collects embedded vectors and writes them to the cache by count or by time."""

    def __init__(self, cache: EmbeddingCache, by_hash: dict, tag: str, every: int, seconds: float):
        self.cache, self.by_hash, self.tag = cache, by_hash, tag
        self.every, self.seconds = max(1, int(every)), float(seconds)
        self.hashes: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.last = time.monotonic()

    def add(self, hashes: list[str], matrix: np.ndarray) -> None:
        self.hashes += hashes
        self.vectors += list(matrix)
        self.by_hash.update(zip(hashes, matrix))
        if len(self.hashes) >= self.every or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.hashes:
            self.cache.add(self.hashes, np.stack(self.vectors), tag=self.tag)
            logger.debug("flushed %d texts to the cache", len(self.hashes))
        self.hashes, self.vectors, self.last = [], [], time.monotonic()


def gather_embeddings(shard_paths, articles_path, embeddings_path, qc_path, section: str | None = None) -> dict:
    """Merge shard files into ``embeddings.parquet`` and ``qc.parquet`` (corpus order).

    Parameters
    ----------
    shard_paths : list of path-like
        Every shard file of one (encoder, section).
    articles_path : path-like
        ``corpus/articles.parquet``: fixes the order and the expected set of articles.
    embeddings_path, qc_path : path-like
        Outputs (article_id, embedding) and (article_id, reason), written atomically.
    section : str, optional
        Only used in log messages.

    Raises
    ------
    ValueError
        When an article is in two shards, in none, unknown to the corpus, or when vectors
        differ in length.
    """
    if not shard_paths:
        raise ValueError("gather_embeddings needs at least one shard file")
    tables, source = [], {}
    for path in shard_paths:
        table = pq.read_table(path)
        missing = {"article_id", "embedding", "reason"} - set(table.column_names)
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; not a shard file")
        for article in table.column("article_id").to_pylist():
            if article in source:
                raise ValueError(f"article {article!r} is in two shards: {source[article]} and {path}")
            source[article] = str(path)
        tables.append(table.select(["article_id", "embedding", "reason"]))
    merged = pa.concat_tables(tables)

    corpus_ids = read_parquet(articles_path, columns=["article_id"])["article_id"].astype(str).tolist()
    absent = [a for a in corpus_ids if a not in source]
    if absent:
        raise ValueError(f"{len(absent)} article(s) of {articles_path} are in no shard, e.g. {absent[:5]}")
    unknown = sorted(set(source) - set(corpus_ids))
    if unknown:
        raise ValueError(f"{len(unknown)} shard article(s) are not in {articles_path}, e.g. {unknown[:5]}")

    row_of = {a: i for i, a in enumerate(merged.column("article_id").to_pylist())}
    ordered = merged.take(pa.array([row_of[a] for a in corpus_ids], pa.int64()))
    has_vector = ordered.column("embedding").is_valid()
    embedded = ordered.filter(has_vector)
    dims = set(pc.list_value_length(embedded.column("embedding")).to_pylist())
    if len(dims) > 1:
        raise ValueError(f"vectors of different lengths {sorted(dims)} across {list(map(str, shard_paths))}")
    write_parquet(embedded.select(["article_id", "embedding"]), embeddings_path)
    qc = ordered.filter(pc.invert(has_vector)).select(["article_id", "reason"])
    write_parquet(qc, qc_path)
    stats = {"embedded": embedded.num_rows, "qc": qc.num_rows, "dim": next(iter(dims), 0)}
    logger.info("gathered %s%s: %s", embeddings_path, f" ({section})" if section else "", stats)
    return stats
