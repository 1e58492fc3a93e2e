"""Per-text embedding cache keyed by (encoder fingerprint, text hash).

Layout: ``<cache_dir>/<fingerprint>/`` holds ``encoder.json`` (what the fingerprint stands
for) and chunk files ``<tag>-<uuid>.parquet`` (text_hash, embedding), each written
atomically. A job flushes a chunk every few hundred texts, so a killed job loses at most
the chunk in progress; concurrent jobs never write the same file. Keys are hashes of the
exact text embedded, so an article whose text changes is re-embedded, identical texts (in
any section or shard) are embedded once, and a new window length, model, revision, dtype
or recipe version lands in a different folder (a full miss).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from mnm.io import atomic_path, matrix_from_column, vectors_to_arrow, write_parquet


def text_hash(text: str) -> str:
    """SHA-256 of the UTF-8 text (the cache key next to the encoder fingerprint)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Embedding store for one encoder fingerprint.

    Parameters
    ----------
    cache_dir : path-like
        Root of the text cache (e.g. ``results/cache/text/<encoder>``).
    fingerprint : str
        :attr:`mnm.text.Encoder.fingerprint`.
    description : dict, optional
        Written once to ``encoder.json`` for humans.
    """

    def __init__(self, cache_dir, fingerprint: str, description: dict | None = None):
        self.dir = Path(cache_dir) / fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "encoder.json"
        if description is not None and not meta.exists():
            with atomic_path(meta) as tmp:
                tmp.write_text(json.dumps(description, indent=2, default=str))

    def chunk_files(self) -> list[Path]:
        """Completed chunk files (temporary files of killed writers start with a dot)."""
        return sorted(p for p in self.dir.glob("*.parquet") if not p.name.startswith("."))

    def lookup(self, hashes) -> dict[str, np.ndarray]:
        """Cached vectors for the given text hashes (missing ones are absent)."""
        wanted = sorted(set(hashes))
        files = self.chunk_files()
        if not wanted or not files:
            return {}
        table = pads.dataset([str(f) for f in files], format="parquet").to_table(
            filter=pads.field("text_hash").isin(wanted)
        )
        if table.num_rows == 0:
            return {}
        keys = table.column("text_hash").to_pylist()
        matrix = matrix_from_column(table.column("embedding"))
        found: dict[str, np.ndarray] = {}
        for key, row in zip(keys, matrix):
            found.setdefault(key, row)
        return found

    def add(self, hashes: list[str], matrix: np.ndarray, tag: str = "chunk") -> Path | None:
        """Write one chunk of vectors atomically; returns its path (None when empty)."""
        if len(hashes) == 0:
            return None
        if len(hashes) != len(matrix):
            raise ValueError(f"{self.dir}: {len(hashes)} hashes but {len(matrix)} vectors")
        path = self.dir / f"{tag}-{uuid.uuid4().hex}.parquet"
        write_parquet(pa.table({"text_hash": pa.array(hashes, pa.string()), "embedding": vectors_to_arrow(matrix)}), path)
        return path
