"""Names of the models and of the files a training job writes (importable without torch).

The Snakefile imports this module while it builds the DAG, which happens at every Snakemake
start, including inside each cluster job; keeping torch and scikit-learn out of it keeps that
start-up short.
"""

from __future__ import annotations

__all__ = ["MNM_VARIANTS", "VOXEL_MODELS", "TORCH_MODELS", "MODEL_NAMES", "SCORE_KIND_OF_MODEL", "OUTPUT_FILES",
           "config_of_model", "config_key_of_model"]

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


def config_of_model(models_config: dict, model_name: str) -> dict:
    """The part of config ``models`` one model's training reads: its own section (the MNM
    variants share ``models.mnm``) and the shared recipe ``models.training``.

    Rules pass this, not the whole section, as a job parameter, so that editing one model's
    settings reruns that model's jobs only (Snakemake's ``params`` rerun trigger).
    """
    key = config_key_of_model(model_name)
    return {name: models_config[name] for name in (key, "training") if name in models_config}


def config_key_of_model(model_name: str) -> str:
    """The key of a model's section in config ``models`` (the MNM variants share ``mnm``)."""
    return "mnm" if model_name in MNM_VARIANTS else model_name
