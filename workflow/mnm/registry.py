"""Names of the models and of the files a training job writes (importable without torch).

The Snakefile imports this module while it builds the DAG, which happens at every Snakemake
start, including inside each cluster job; keeping torch and scikit-learn out of it keeps that
start-up short.
"""

from __future__ import annotations

__all__ = ["MNM_VARIANTS", "VOXEL_MODELS", "TORCH_MODELS", "MODEL_NAMES", "SCORE_KIND_OF_MODEL", "OUTPUT_FILES"]

MNM_VARIANTS = ("mnm", "mnm_reverse", "mnm_no_hier")
#: Models whose brain side is a voxel map on a coarse grid (the KDE maps of rule ``kde_maps``).
VOXEL_MODELS = ("text2brain",)
TORCH_MODELS = (*MNM_VARIANTS, "neurocontext", "mlp", *VOXEL_MODELS)
MODEL_NAMES = (*TORCH_MODELS, "ridge", "tfidf")
#: How each model's stored embeddings are scored (:func:`mnm.scoring.score_matrix`).
SCORE_KIND_OF_MODEL = {
    **{name: "angle" for name in MNM_VARIANTS},
    "neurocontext": "cosine",
    "mlp": "correlation",
    "ridge": "correlation",
    "tfidf": "correlation",
    "text2brain": "correlation",
}
#: Files one (repeat, fold) of a training job writes.
OUTPUT_FILES = {"model": "model.safetensors", "history": "history.parquet",
                "test_embeddings": "test_embeddings.parquet",
                "validation_embeddings": "validation_embeddings.parquet"}
