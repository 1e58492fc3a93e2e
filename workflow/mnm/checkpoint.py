"""Checkpoints that cannot run code: tensors in safetensors, everything else in JSON.

A checkpoint is one ``model.safetensors`` file: named arrays (torch ``state_dict`` entries,
ridge coefficients and intercepts, TF-IDF idf weights, scaler statistics) stored as
safetensors tensors, and a JSON document (model name, family, constructor arguments, score
kind, curvature, TF-IDF vocabulary, fold ids, ...) stored in the safetensors header under the
``mnm`` key. Reading one parses a length-prefixed JSON header and raw little-endian arrays;
nothing is unpickled, so a downloaded checkpoint cannot execute code. Anything that is not a
safetensors file, such as a pickle ``model.pt`` of an older version of this pipeline, is
refused with :class:`CheckpointError` before any byte of it is interpreted as code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from mnm.io import atomic_path

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint"]

#: Version of the checkpoint layout (bumped when the JSON document changes incompatibly).
CHECKPOINT_FORMAT = 2
_METADATA_KEY = "mnm"


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this pipeline (the message names it)."""


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"checkpoint metadata value of type {type(value).__name__} is not JSON")


def save_checkpoint(path: str | os.PathLike, tensors: dict, document: dict) -> None:
    """Write ``tensors`` (name -> array or tensor) and a JSON ``document`` atomically.

    Parameters
    ----------
    path : path-like
        Destination, conventionally ``model.safetensors``.
    tensors : dict
        Arrays to store; numpy arrays are converted to torch tensors (copied, contiguous).
    document : dict
        JSON-serialisable metadata; ``format`` is added.
    """
    from safetensors.torch import save_file

    stored = {name: torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
              .detach().cpu().contiguous().clone() for name, value in tensors.items()}
    header = json.dumps({"format": CHECKPOINT_FORMAT, **document}, default=_json_default)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(stored, str(tmp), metadata={_METADATA_KEY: header})


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by :func:`save_checkpoint` -> ``(tensors, document)``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    CheckpointError
        When the file is not a safetensors file with this pipeline's JSON document (for
        example a pickle), or its format version is unsupported.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = (handle.metadata() or {}).get(_METADATA_KEY)
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: not a safetensors checkpoint ({error}). Pickle checkpoints (model.pt of "
            "older versions) are refused because loading them can run code: retrain with "
            "`snakemake --forcerun train_model`."
        ) from None
    if header is None:
        raise CheckpointError(f"{path}: safetensors file without the '{_METADATA_KEY}' metadata "
                              "document; not a checkpoint of this pipeline")
    try:
        document = json.loads(header)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON ({error})") from None
    if document.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {document.get('format')!r}, this "
                              f"version reads format {CHECKPOINT_FORMAT}; retrain")
    return tensors, document
