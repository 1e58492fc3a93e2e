"""Stand-ins for the paper run's GPU model in the CPU rehearsal (``config/rehearsal.yaml``).

:func:`build_tiny_mistral` writes a randomly initialised, tiny Mistral (the architecture of
Mistral-7B-v0.1: rotary positions, grouped-query attention, SwiGLU, RMSNorm, a ``<s>``
prefix) and a tokenizer that covers the generated corpus (:mod:`mnm.generated_pubget`) to a
local folder, in the Hugging Face layout with safetensors weights. The text stage loads it
like any local model folder, so the paper's code path runs for real on full-length bodies:
8,192-token windows, shards, the per-article cache.

The tokenizer cuts words into pieces of at most ``piece_chars`` characters (and
punctuation), a crude sub-word scheme that gives about as many tokens per word (~1.4) as
Mistral's tokenizer on scientific English, so windows hold as many words as in the real run.
Its vocabulary is every piece of every word form the generator writes; anything else is
``<unk>``. Nothing here is trained: the vectors carry no meaning beyond the words' identity.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from mnm.io import atomic_path

__all__ = ["TINY_MISTRAL", "build_tiny_mistral", "piece_pattern"]

logger = logging.getLogger(__name__)

#: Architecture of the rehearsal model (Mistral-7B-v0.1 has hidden 4096, 32 layers, 32 query
#: and 8 key/value heads, 32,768 positions, a 4,096-token sliding window).
TINY_MISTRAL = {
    # One head of 16 dimensions: on CPU, attention over an 8,192-token window costs about the
    # same for every head size (its softmax dominates), so one head keeps the stand-in cheap.
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
    "max_position_embeddings": 32768,
    # Full causal attention: on CPU a sliding window routes SDPA through an explicit
    # (window x window) mask, 2.5 times slower at 8,192 tokens; the pipeline is the same.
    "sliding_window": None,
}
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
README = """# Generated model: tiny randomly initialised Mistral (not a trained model)

Written by `mnm.rehearsal.build_tiny_mistral` for the CPU rehearsal of the paper-scale run
(`config/rehearsal.yaml`). Architecture of Mistral-7B-v0.1 at toy size ({config}), random
weights (seed {seed}); a word-piece tokenizer covering the generated corpus of
`mnm.generated_pubget`. Its embeddings exercise the pipeline, they mean nothing.
"""


def piece_pattern(piece_chars: int) -> str:
    """Regular expression of one token: a run of at most ``piece_chars`` word characters, or
    one punctuation character."""
    return rf"\w{{1,{int(piece_chars)}}}|[^\w\s]"


def _vocabulary(piece_chars: int) -> dict[str, int]:
    from mnm.generated_pubget import word_forms

    pattern = re.compile(piece_pattern(piece_chars))
    pieces = sorted({p for form in word_forms() for p in pattern.findall(form)})
    return {token: i for i, token in enumerate(SPECIAL_TOKENS + pieces)}


def build_tiny_mistral(folder, seed: int = 0, piece_chars: int = 7, **architecture) -> Path:
    """Write a tiny randomly initialised Mistral and its tokenizer to ``folder``.

    Parameters
    ----------
    folder : path-like
        Output folder (created): ``config.json``, ``model.safetensors``, tokenizer files,
        ``README.md`` saying it is generated.
    seed : int
        Seed of the random weights (same seed, same files).
    piece_chars : int
        Longest word piece of the tokenizer.
    **architecture
        Overrides of :data:`TINY_MISTRAL` (``MistralConfig`` arguments).

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import MistralConfig, MistralModel, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocabulary(piece_chars)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Keep the pattern's matches, drop what lies between them (whitespace).
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(piece_pattern(piece_chars)),
                                                   behavior="removed", invert=True)
    # Mistral's template: <s> before the text, nothing after.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>", pad_token="<pad>").save_pretrained(folder)
    settings = {**TINY_MISTRAL, **architecture}
    config = MistralConfig(vocab_size=len(vocab), pad_token_id=vocab["<pad>"],
                           bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], **settings)
    torch.manual_seed(int(seed))
    MistralModel(config).save_pretrained(folder, safe_serialization=True)
    with atomic_path(folder / "README.md") as tmp:
        tmp.write_text(README.format(config=json.dumps(settings), seed=seed))
    logger.info("tiny Mistral (%s, vocabulary %d) written to %s", settings, len(vocab), folder)
    return folder
