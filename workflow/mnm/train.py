"""One training job: one model, section and fold, for every repeat of the cross-validation.

A job (rule ``train_model``) reads the shared inputs once, then for each repeat ``r`` of the
fold assignment trains the model on that repeat's fold ``k`` (:mod:`mnm.training.data` says
which articles are fit, inner validation and test) and writes, under
``.../repeat-{r}/fold-{k}/``:

* ``model.safetensors``: the trained model (:mod:`mnm.trained`, no pickle);
* ``history.parquet``: one row per epoch (steps, learning rate, loss terms, curvature...,
  inner-validation metrics, ``is_best``);
* ``test_embeddings.parquet``: the held-out fold's embeddings as the model scores them
  (article_id, text, brain, n_active, score_kind, curvature, angle_apex;
  :func:`mnm.scoring.score_matrix` rescores them);
* ``validation_embeddings.parquet``: the same for the inner-validation articles, so that
  choices made on inner validation (e.g. lambda_hier) are recomputable without the test fold.

Fold ``"all"`` trains once on every article (inner validation still carved); its
``test_embeddings.parquet`` holds *every* article (in-sample; for queries and figures only).
Repeats of one fold share a job so that the default run stays small; rerunning one fold
retrains that fold's repeats and nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mnm.registry import MODEL_NAMES, OUTPUT_FILES, VOXEL_MODELS, config_key_of_model
from mnm.trained import resolve_device
from mnm.training.data import load_fold_inputs, split_fold
from mnm.training.fit import fit_model
from mnm.training.loop import Recipe
from mnm.io import write_parquet
from mnm.scoring import write_embedding_blocks

__all__ = ["model_params", "recipe_of", "train_fold", "train_fold_from_snakemake",
           "train_tradeoff_from_snakemake", "tradeoff_params", "group_outputs", "OUTPUT_FILES"]

log = logging.getLogger("mnm.train")

def model_params(models_config: dict, model_name: str) -> dict:
    """The config section of a model (the MNM variants share ``models.mnm``)."""
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; expected one of {MODEL_NAMES}")
    key = config_key_of_model(model_name)
    if key not in models_config:
        raise KeyError(f"config models.{key} is missing (parameters of model {model_name!r})")
    return dict(models_config[key])


def recipe_of(models_config: dict, model_name: str) -> Recipe:
    """Shared ``models.training`` recipe, updated by the model's own ``training`` overrides."""
    overrides = model_params(models_config, model_name).get("training") or {}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    return Recipe.from_config({**models_config.get("training", {}), **overrides})


#: Articles embedded and written at a time (fold-all "test" sets hold every article).
EMBEDDING_BLOCK_ROWS = 1024


def _embedding_blocks(model, data, rows):
    """``(ids, text, brain, n_active)`` of ``rows`` in blocks of :data:`EMBEDDING_BLOCK_ROWS`."""
    for start in range(0, max(len(rows), 1), EMBEDDING_BLOCK_ROWS):
        block = rows[start:start + EMBEDDING_BLOCK_ROWS]
        text = (model.embed_term_counts(data.term_counts.take(block)) if model.name == "tfidf"
                else model.embed_text(data.text[block]))
        yield data.ids[block], text, model.embed_brain(data.brain[block]), data.n_active[block]


def _write_outputs(model, history, data, split, paths: dict) -> None:
    model.save(paths["model"])
    write_parquet(history, paths["history"])
    for rows, key in ((split.test, "test_embeddings"), (split.validation, "validation_embeddings")):
        write_embedding_blocks(paths[key], _embedding_blocks(model, data, rows), model.score_kind,
                               model.curvature, model.angle_apex)


def train_fold(
    model_name: str,
    text_path,
    brain_path,
    folds_path,
    articles_path,
    section: str,
    fold,
    params: dict,
    recipe: Recipe,
    outputs: dict,
    *,
    encoder: str = "",
    atlas: str = "",
    encoder_config: dict | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    device: str = "auto",
    threads: int | None = None,
    decoder_repeats=(0,),
    progress: bool = False,
    kde_maps=None,
    term_counts=None,
) -> list[dict]:
    """Train ``model_name`` on fold ``fold`` of every repeat in ``outputs``.

    Parameters
    ----------
    model_name : str
        One of :data:`mnm.trained.MODEL_NAMES`.
    text_path, brain_path, folds_path, articles_path : path
        Stage inputs (:func:`mnm.training.data.load_fold_inputs`).
    section : str
        Text section of the embeddings (and of TF-IDF's raw text).
    fold : int or "all"
        Held-out fold.
    params : dict
        The model's config section (:func:`model_params`).
    recipe : Recipe
        Optimiser settings of torch models (:func:`recipe_of`).
    outputs : dict
        Repeat -> ``{"model", "history", "test_embeddings", "validation_embeddings"}`` paths.
        For fold ``"all"`` give one entry (its repeat number is ignored).
    encoder, atlas, encoder_config : str, str, dict
        Recorded in the checkpoint (the encoder config lets the model embed raw texts).
    seed : int
        Repeat ``r`` seeds initialisation, dropout, batch order and the validation split
        with ``seed + r``.
    validation_fraction : float
        Share of the training folds used as inner validation set.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    threads : int, optional
        torch intra-op threads.
    decoder_repeats : collection of int
        Repeats whose contrastive models also get a text -> coefficients ridge decoder (map
        prediction uses repeat 0; queries use fold "all").
    kde_maps : (path, path), optional
        ``kde_4mm/maps.parquet`` and ``mask.nii.gz``: the brain input of voxel-map models
        (:data:`mnm.trained.VOXEL_MODELS`, required for them, ignored for the others).
    term_counts : path, optional
        ``text/term_counts/{section}.npz``: TF-IDF reads the section's counted texts from it
        instead of counting ``articles_path``'s texts itself (ignored by the other models).

    Returns
    -------
    list of dict
        One summary per repeat: ``repeat``, ``best_epoch``, ``n_fit``, ``n_validation``, ``n_test``.
    """
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    device = resolve_device(device)
    if model_name in VOXEL_MODELS and not kde_maps:
        raise ValueError(f"model {model_name} needs the kde_4mm maps and mask (kde_maps=...)")
    data = load_fold_inputs(text_path, brain_path, folds_path, articles_path,
                            section if model_name == "tfidf" else None,
                            kde_maps=tuple(kde_maps) if model_name in VOXEL_MODELS else None,
                            term_counts=term_counts if model_name == "tfidf" else None)
    summaries = []
    for repeat, paths in sorted(outputs.items()):
        repeat = int(repeat)
        if repeat not in data.folds:
            raise ValueError(f"{folds_path}: no repeat {repeat} (repeats present: {sorted(data.folds)})")
        split = split_fold(data.ids, data.folds[repeat], fold, validation_fraction, seed + repeat)
        log.info("%s repeat %d fold %s: %d fit, %d validation, %d test articles", model_name, repeat,
                 fold, len(split.fit), len(split.validation), len(split.test))
        with_decoder = str(fold) == "all" or repeat in set(decoder_repeats)
        model, history, best_epoch = fit_model(model_name, data, split, params, recipe,
                                               seed=seed + repeat, device=device,
                                               with_decoder=with_decoder, progress=progress)
        model.metadata.update({
            "encoder": encoder, "encoder_config": encoder_config, "section": section,
            "atlas": atlas, "fold": str(fold), "repeat": repeat, "seed": int(seed + repeat),
            "validation_fraction": float(validation_fraction), "params": params,
            "recipe": recipe.as_dict(), "best_epoch": int(best_epoch),
            "fit_ids": data.ids[split.fit].tolist(),
            "validation_ids": data.ids[split.validation].tolist(),
            "test_ids": data.ids[split.test].tolist(), "missing_counts": data.missing,
        })
        _write_outputs(model, history, data, split, paths)
        summary = {"repeat": repeat, "best_epoch": int(best_epoch), "n_epochs": int(history["epoch"].max()),
                   "n_fit": len(split.fit), "n_validation": len(split.validation), "n_test": len(split.test)}
        log.info("wrote %s (%s)", paths["model"], summary)
        summaries.append(summary)
    return summaries


def group_outputs(output_paths: list, keys: list) -> dict:
    """Group a rule's output files: ``{key: {"model": ..., "history": ..., ...}}``.

    The rule lists, for each key in order (a repeat, or a fold), the files of
    :data:`OUTPUT_FILES` in order.
    """
    per_key = len(OUTPUT_FILES)
    if len(output_paths) != per_key * len(keys):
        raise ValueError(f"expected {per_key} outputs for each of {keys}, got {len(output_paths)}")
    grouped = {}
    for i, key in enumerate(keys):
        chunk = list(output_paths)[i * per_key:(i + 1) * per_key]
        for name, path in zip(OUTPUT_FILES, chunk):
            if Path(path).name != OUTPUT_FILES[name]:
                raise ValueError(f"output {path} is not {OUTPUT_FILES[name]}")
        grouped[int(key)] = dict(zip(OUTPUT_FILES, chunk))
    return grouped


def train_fold_from_snakemake(smk) -> list[dict]:
    """Call :func:`train_fold` with the fields of a Snakemake ``script:`` object."""
    models_config = smk.params.models_config
    name = smk.wildcards.model
    return train_fold(
        name, smk.input.text, smk.input.brain, smk.input.folds, smk.input.articles,
        smk.wildcards.section, smk.wildcards.fold, model_params(models_config, name),
        recipe_of(models_config, name), group_outputs(smk.output, smk.params.repeats),
        encoder=smk.wildcards.encoder, atlas=smk.wildcards.atlas,
        encoder_config=smk.params.encoder_config, seed=smk.params.seed,
        validation_fraction=smk.params.validation_fraction, device=smk.params.device,
        threads=smk.threads, kde_maps=list(smk.input.get("kde_maps", [])) or None,
        term_counts=smk.input.get("term_counts") or None,
    )  # fmt: skip


def tradeoff_params(models_config: dict, head: str, lambda_hier: float) -> dict:
    """MNM's config section with one trade-off point's radius head and hierarchy weight."""
    return {**model_params(models_config, "mnm"), "radius_head": head, "lambda_hier": float(lambda_hier)}


def train_tradeoff_from_snakemake(smk) -> list[dict]:
    """Rule ``train_tradeoff``: MNM at one (radius head, lambda_hier) on every fold of repeat 0.

    Only repeat 0 is trained (the sweep maps the trade-off; the paired comparisons of the
    report use every repeat of the main models) and no decoder is fitted.
    """
    models_config = smk.params.models_config
    params = tradeoff_params(models_config, smk.wildcards.head, float(smk.wildcards.lam))
    summaries = []
    for fold, paths in group_outputs(smk.output, smk.params.folds).items():
        summaries += train_fold(
            "mnm", smk.input.text, smk.input.brain, smk.input.folds, smk.input.articles,
            smk.params.section, fold, params, recipe_of(models_config, "mnm"), {0: paths},
            encoder=smk.params.encoder, atlas=smk.params.atlas,
            encoder_config=smk.params.encoder_config, seed=smk.params.seed,
            validation_fraction=smk.params.validation_fraction, device=smk.params.device,
            threads=smk.threads, decoder_repeats=(),
        )  # fmt: skip
    return summaries
