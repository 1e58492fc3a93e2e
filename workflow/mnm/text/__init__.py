"""Text-embedding stage: encoders, the NeuroConText windowed recipe, shards and cache.

Public names
------------
Encoder
    A Hugging Face encoder applied with the windowed recipe (see :mod:`mnm.text.encoder`).
section_texts
    Build the text of a section (title, abstract, body, title_abstract) per article.
embed_shard, gather_embeddings
    The two pipeline steps behind the ``embed_shard`` and ``gather_embeddings`` rules.
"""

from mnm.text.encoder import RECIPE_VERSION, Encoder, resolve_device, wants_gpu
from mnm.text.sections import SECTIONS, section_texts
from mnm.text.shards import embed_shard, gather_embeddings, shard_of

__all__ = [
    "Encoder",
    "RECIPE_VERSION",
    "SECTIONS",
    "embed_shard",
    "gather_embeddings",
    "resolve_device",
    "section_texts",
    "shard_of",
    "wants_gpu",
]
