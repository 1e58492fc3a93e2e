"""Dice evaluation of the text -> brain maps of :mod:`mnm.report.maps` against held-out articles.

Each predicted map (parcel route per hierarchy level, decoder route, voxel route) of a held-out article is
compared with that article's own KDE map of its peaks (``BrainProjector.kde_img``) by the Dice
of their top 5..30 % voxels inside the MNI brain mask, and the area under that Dice curve
(:mod:`mnm.metrics`), beside two controls: the prediction made for *another* held-out article
(shuffled articles) and a random map with as many non-zero voxels (random map).

One job per model (:func:`evaluate_model_maps`, so the models' evaluations run side by side),
then :func:`summarise_map_prediction` merges them into the report's table;
:func:`write_map_examples` draws a few held-out articles.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from mnm import metrics
from mnm.io import atomic_path, read_matrix, read_parquet, save_nifti, write_parquet
from mnm.report.maps import (
    component_label_volume,
    informative_levels,
    parcel_assignment,
    parcel_coefficients,
    parcel_embeddings,
    parcel_label_volume,
    predict_decoder_map,
    predict_parcel_map,
    predict_voxel_map,
)

__all__ = ["MapEvaluator", "DecoderInputs", "evaluate_fold", "evaluate_model_maps", "summarise_map_prediction",
           "write_map_examples", "evaluate_map_prediction", "summarise_dice", "dice_markdown", "DICE_COLUMNS"]

log = logging.getLogger(__name__)

DICE_COLUMNS = ["model", "section", "atlas", "route", "level", "kind", "fold", "article_id", "fraction", "dice"]


def _voxels(img, mask: np.ndarray) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    if data.shape != mask.shape:
        raise ValueError(f"map of shape {data.shape} is not on the atlas grid {mask.shape}")
    return data[mask]


def _pick_articles(ids: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(len(ids))
    return np.sort(order if n is None else order[: int(n)])


class MapEvaluator:
    """Atlas, projector and truth maps shared by every model of the map evaluation.

    Parameters
    ----------
    atlas_dir : path-like
        Folder with ``atlas.nii.gz`` and ``components.parquet``.
    peaks : path-like
        ``corpus/peaks.parquet`` (the truth of an article is the KDE map of its peaks).
    fwhm_mm, zscore : float, bool
        The brain stage's settings.
    """

    def __init__(self, atlas_dir, peaks, fwhm_mm: float = 9.0, zscore: bool = False):
        from mnm.atlas import read_atlas
        from mnm.brain import BrainProjector

        self.maps_img, components = read_atlas(atlas_dir)
        self.levels = informative_levels(components)
        self.projector = BrainProjector(self.maps_img, fwhm_mm=fwhm_mm).fit(lookup_table=False)
        self.mask = self.projector.mask_  # the MNI brain mask the KDE maps are restricted to
        component_labels = component_label_volume(self.maps_img, self.projector)
        self.label_volumes = {lvl: parcel_label_volume(component_labels, parcel_assignment(components, lvl)[1])
                              for lvl in self.levels}
        self.parcel_vectors = {lvl: parcel_coefficients(self.maps_img, components, lvl, self.projector,
                                                        zscore, component_labels)[1]
                               for lvl in self.levels}
        table = read_parquet(peaks)
        table["article_id"] = table["article_id"].astype(str)
        self.peaks = {k: g[["x", "y", "z"]].to_numpy() for k, g in table.groupby("article_id")}
        self._truth: dict[tuple, np.ndarray] = {}
        self._random: dict[tuple, np.ndarray] = {}

    def truth_img(self, article: str) -> nib.Nifti1Image:
        """The article's own KDE map (dense; computed on each call)."""
        if article not in self.peaks:
            raise ValueError(f"article {article} has no peaks in the corpus")
        return self.projector.kde_img(self.peaks[article])

    def truth_tiers(self, article: str, fractions) -> np.ndarray:
        """:func:`mnm.metrics.top_fraction_tiers` of the article's own KDE map (cached)."""
        key = (article, tuple(fractions))
        if key not in self._truth:
            self._truth[key] = metrics.top_fraction_tiers(_voxels(self.truth_img(article), self.mask), fractions)
        return self._truth[key]

    def predictions(self, trained, text_embedding, parcel_embeddings: dict, decoder_input,
                    temperature: float = 1.0) -> dict:
        """``{(route, level): image}``: one parcel-route map per level of ``parcel_embeddings``,
        the decoder map and, for voxel-map models, their own map on the analysis grid."""
        maps = {("parcel", lvl): predict_parcel_map(trained, text_embedding, embedding,
                                                    self.label_volumes[lvl], self.maps_img.affine, temperature)
                for lvl, embedding in parcel_embeddings.items()}
        if decoder_input is not None:
            decoded = predict_decoder_map(trained, decoder_input, self.projector)
            if decoded is not None:
                maps[("decoder", "atlas")] = decoded
            voxel = predict_voxel_map(trained, decoder_input, self.maps_img.slicer[..., 0])
            if voxel is not None:
                maps[("voxel", "4mm")] = voxel
        return maps

    def random_map_tiers(self, article: str, n_active: int, fractions) -> np.ndarray:
        """:func:`mnm.metrics.top_fraction_tiers` of a random map with ``n_active`` non-zero
        voxels at random places.

        Seeded by the article and ``n_active`` and cached, so every model's control for an
        article is the same random map.
        """
        key = (article, int(n_active), tuple(fractions))
        if key not in self._random:
            rng = np.random.default_rng(zlib.crc32(f"{article}:{int(n_active)}".encode()))
            values = np.zeros(int(self.mask.sum()), dtype=np.float32)
            count = min(int(n_active), values.size)
            values[rng.choice(values.size, size=count, replace=False)] = rng.random(count, dtype=np.float32) + 1.0
            self._random[key] = metrics.top_fraction_tiers(values, fractions)
        return self._random[key]


def _dice_rows(keys: dict, kind: str, article: str, fractions, pred_tiers, truth_tiers) -> list[tuple]:
    """One :data:`DICE_COLUMNS` row per fraction."""
    curve = metrics.dice_curve_from_tiers(pred_tiers, truth_tiers, fractions)
    return [(keys["model"], keys["section"], keys["atlas"], keys["route"], keys["level"], kind, keys["fold"],
             article, f, d) for f, d in zip(fractions, curve)]


def evaluate_fold(evaluator: MapEvaluator, trained, keys: dict, ids, text_emb, decoder_inputs,
                  fractions, articles_per_fold, seed: int, temperature: float = 1.0):
    """Dice rows of one model and fold: the model, shuffled-article and random-map controls.

    Returns
    -------
    rows : list of tuple
        (model, section, route, level, kind, fold, article_id, fraction, dice); ``kind`` is
        ``model``, ``shuffled articles`` (the prediction made for another held-out article of
        the fold, against this article's truth) or ``random map`` (random values on as many
        voxels as the prediction has non-zero ones).
    examples : dict
        Article -> {name: image} of the evaluated articles (truth and predictions).
    """
    picked = _pick_articles(ids, articles_per_fold, seed + keys["fold"])
    has_parcels = getattr(trained, "brain_input", "coefficients") == "coefficients"  # voxel-map models: none
    parcel_emb = ({lvl: parcel_embeddings(trained, evaluator.parcel_vectors[lvl]) for lvl in evaluator.levels}
                  if has_parcels else {})
    tiers, counts, examples = {}, {}, {}
    for index in picked:
        article = str(ids[index])
        evaluator.truth_tiers(article, fractions)
        decoder_input = decoder_inputs.get(trained, keys["section"], article)
        maps = evaluator.predictions(trained, text_emb[index], parcel_emb, decoder_input, temperature)
        for route_level, img in maps.items():
            voxels = _voxels(img, evaluator.mask)
            tiers[(route_level, article)] = metrics.top_fraction_tiers(voxels, fractions)
            counts[(route_level, article)] = int(np.count_nonzero(voxels))
        examples[article] = maps
    articles = [str(ids[i]) for i in picked]
    # Each article is scored against another article's prediction (a cyclic shift of the
    # evaluated articles: a derangement when there are at least two).
    partner = dict(zip(articles, articles[1:] + articles[:1]))
    rows = []
    for (route_level, article), pred in tiers.items():
        where = {**keys, "route": route_level[0], "level": route_level[1]}
        truth = evaluator.truth_tiers(article, fractions)
        rows += _dice_rows(where, "model", article, fractions, pred, truth)
        if len(articles) > 1 and (route_level, partner[article]) in tiers:
            rows += _dice_rows(where, "shuffled articles", article, fractions,
                               tiers[(route_level, partner[article])], truth)
        rows += _dice_rows(where, "random map", article, fractions,
                           evaluator.random_map_tiers(article, counts[(route_level, article)], fractions), truth)
    return rows, examples


class DecoderInputs:
    """Lazy per-section access to the decoder route's inputs of one article.

    Text-embedding models take the article's row of the section's embedding table; the
    TF-IDF model takes its raw section text.
    """

    def __init__(self, text_inputs: dict, articles):
        self.paths = dict(text_inputs)
        self.articles_path = articles
        self._matrices: dict = {}
        self._texts: dict = {}

    def get(self, trained, section: str, article: str):
        """Input for ``trained.predict_brain``, or None when the article has none."""
        if getattr(trained, "name", None) == "tfidf":
            from mnm.models.regression import section_texts
            from mnm.text.sections import article_columns

            if section not in self._texts:
                articles = read_parquet(self.articles_path, article_columns(section))
                self._texts[section] = section_texts(articles, section)
            texts = self._texts[section]
            return [texts.loc[article]] if article in texts.index else None
        if section not in self.paths:
            raise ValueError(f"no text embeddings given for section {section!r}")
        if section not in self._matrices:
            ids, matrix = read_matrix(self.paths[section])
            self._matrices[section] = ({str(a): i for i, a in enumerate(ids)}, matrix)
        rows, matrix = self._matrices[section]
        return matrix[[rows[article]]] if article in rows else None


def _fold_pairs(model_paths, test_embedding_paths) -> list[tuple]:
    """Aligned (model, test embeddings) paths of numbered folds, checked to match."""
    from mnm.report.retrieval import parse_fold_path

    if len(model_paths) != len(test_embedding_paths):
        raise ValueError(f"{len(model_paths)} model files but {len(test_embedding_paths)} test files")
    for model_path, test_path in zip(model_paths, test_embedding_paths):
        if parse_fold_path(model_path) != parse_fold_path(test_path):
            raise ValueError(f"{model_path} and {test_path} are not the same model and fold")
    pairs = [(m, t) for m, t in zip(model_paths, test_embedding_paths) if parse_fold_path(m)["fold"].isdigit()]
    if not pairs:
        raise ValueError("no per-fold model given for map prediction")
    return pairs


def evaluate_model_maps(model_paths, test_embedding_paths, atlas_dir, peaks, text_inputs, articles, out_dice=None,
                        fractions=(0.05, 0.10, 0.15, 0.20, 0.25, 0.30), fwhm_mm: float = 9.0,
                        zscore: bool = False, articles_per_fold: int | None = 10, temperature: float = 1.0,
                        seed: int = 0, evaluator: MapEvaluator | None = None) -> pd.DataFrame:
    """Dice rows (:data:`DICE_COLUMNS`) of the per-fold models given (written to ``out_dice`` if given).

    Parameters
    ----------
    model_paths, test_embedding_paths : list of path-like
        Per-fold ``model.safetensors`` and ``test_embeddings.parquet`` (aligned; one repeat).
    atlas_dir : path-like
        Folder with ``atlas.nii.gz`` and ``components.parquet``.
    peaks, articles : path-like
        ``corpus/peaks.parquet`` and ``corpus/articles.parquet``.
    text_inputs : dict
        ``{section: text/{encoder}/{section}/embeddings.parquet}``, the decoder route's input
        features (the TF-IDF model reads the section's raw text from ``articles`` instead).
    articles_per_fold : int or None
        Held-out articles evaluated per fold (None = all); each costs one dense KDE map.
    temperature : float
        Softmax temperature of the parcel route (Dice depends only on the parcel order).
    """
    from mnm.report.retrieval import parse_fold_path
    from mnm.scoring import read_embeddings
    from mnm.trained import load_trained

    pairs = _fold_pairs(model_paths, test_embedding_paths)
    evaluator = evaluator or MapEvaluator(atlas_dir, peaks, fwhm_mm, zscore)
    decoder_inputs = DecoderInputs(text_inputs, articles)
    rows = []
    for model_path, test_path in tqdm(pairs, desc="map prediction"):
        path_keys = parse_fold_path(model_path)
        keys = {**path_keys, "fold": int(path_keys["fold"])}
        ids, text_emb, _, _ = read_embeddings(test_path)
        fold_rows, _ = evaluate_fold(evaluator, load_trained(model_path), keys, ids, text_emb, decoder_inputs,
                                     fractions, articles_per_fold, seed, temperature)
        rows += fold_rows
    dice = pd.DataFrame(rows, columns=DICE_COLUMNS)
    if out_dice is not None:
        write_parquet(dice, out_dice)
    return dice


def summarise_map_prediction(dice_tables, out_dice, out_summary, out_markdown, fractions) -> pd.DataFrame:
    """Merge per-model Dice tables (paths or DataFrames) into ``map_dice.parquet``, the summary
    and its Markdown."""
    dice = pd.concat([t if isinstance(t, pd.DataFrame) else read_parquet(t) for t in dice_tables],
                     ignore_index=True)
    summary = summarise_dice(dice, fractions)
    write_parquet(dice, out_dice)
    write_parquet(summary, out_summary)
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(dice_markdown(summary, fractions))
    return summary


def write_map_examples(model_path, test_embedding_path, atlas_dir, peaks, text_inputs, articles,
                       example_figures, example_dir=None, fwhm_mm: float = 9.0, zscore: bool = False,
                       temperature: float = 1.0, seed: int = 0, evaluator: MapEvaluator | None = None) -> None:
    """Glass brains (and NIfTI) of the first held-out articles of one model and fold:
    the article's KDE map beside each predicted map."""
    from mnm.report import figures
    from mnm.report.retrieval import parse_fold_path
    from mnm.scoring import read_embeddings
    from mnm.trained import load_trained

    keys = {**parse_fold_path(model_path)}
    keys["fold"] = int(keys["fold"])
    evaluator = evaluator or MapEvaluator(atlas_dir, peaks, fwhm_mm, zscore)
    ids, text_emb, _, _ = read_embeddings(test_embedding_path)
    _, maps = evaluate_fold(evaluator, load_trained(model_path), keys, ids, text_emb,
                            DecoderInputs(text_inputs, articles), (0.1,), len(example_figures), seed,
                            temperature)
    examples = {article: {"truth: KDE of its peaks": evaluator.truth_img(article)}
                | {f"{keys['model']} {route} {level}": img for (route, level), img in predicted.items()}
                for article, predicted in maps.items()}
    _write_examples(examples, example_figures, example_dir, figures)


def evaluate_map_prediction(model_paths, test_embedding_paths, atlas_dir, peaks, text_inputs, articles,
                            out_dice, out_summary, out_markdown, example_figures=(), example_dir=None,
                            fractions=(0.05, 0.10, 0.15, 0.20, 0.25, 0.30), fwhm_mm: float = 9.0,
                            zscore: bool = False, articles_per_fold: int | None = 10, temperature: float = 1.0,
                            example_model: str = "mnm", seed: int = 0) -> pd.DataFrame:
    """The whole map evaluation in one process (the pipeline splits it into one job per model):
    :func:`evaluate_model_maps` per model, :func:`summarise_map_prediction`, and
    :func:`write_map_examples` of ``example_model`` (the first model when not given)."""
    from mnm.report.retrieval import parse_fold_path

    pairs = _fold_pairs(model_paths, test_embedding_paths)
    evaluator = MapEvaluator(atlas_dir, peaks, fwhm_mm, zscore)
    by_model: dict[str, list] = {}
    for pair in pairs:
        by_model.setdefault(parse_fold_path(pair[0])["model"], []).append(pair)
    tables = [evaluate_model_maps([m for m, _ in model_pairs], [t for _, t in model_pairs], atlas_dir, peaks,
                                  text_inputs, articles, None, fractions, fwhm_mm, zscore, articles_per_fold,
                                  temperature, seed, evaluator)
              for model_pairs in by_model.values()]
    summary = summarise_map_prediction(tables, out_dice, out_summary, out_markdown, fractions)
    example = by_model.get(example_model) or next(iter(by_model.values()))
    if example_figures:
        write_map_examples(*example[0], atlas_dir, peaks, text_inputs, articles, example_figures, example_dir,
                           fwhm_mm, zscore, temperature, seed, evaluator)
    return summary


def summarise_dice(dice: pd.DataFrame, fractions) -> pd.DataFrame:
    """Area under each article's Dice curve, then mean ± std (ddof=1) over articles.

    Rows keep the order in which models, sections, routes and levels first appear in ``dice``.
    """
    keys = ["model", "section", "atlas", "route", "level", "kind"]
    if dice.empty:
        return pd.DataFrame(columns=keys + ["dice_auc_mean", "dice_auc_std", "n_articles"])
    areas = (
        dice.sort_values("fraction", kind="stable")
        .groupby(keys + ["fold", "article_id"], sort=False)
        .apply(lambda g: metrics.dice_auc(g["fraction"], g["dice"]), include_groups=False)
        .rename("auc").reset_index()
    )
    summary = areas.groupby(keys, sort=False)["auc"].agg(
        dice_auc_mean="mean", dice_auc_std=lambda v: v.std(ddof=1), n_articles="count")
    at = dice.groupby(keys + ["fraction"], sort=False)["dice"].mean().unstack("fraction")
    at.columns = [f"dice_top_{round(100 * f)}" for f in at.columns]
    summary = summary.join(at).reset_index()
    order = {key: {value: i for i, value in enumerate(dict.fromkeys(dice[key]))} for key in keys}
    rank = summary[keys].apply(lambda column: column.map(order[column.name]))
    return summary.iloc[np.lexsort([rank[key] for key in reversed(keys)])].reset_index(drop=True)


def dice_markdown(summary: pd.DataFrame, fractions) -> str:
    """Markdown table of the Dice-curve areas of each model next to its two chance controls."""
    span = fractions[-1] - fractions[0]
    lines = [
        "# Map prediction (Dice vs held-out articles' KDE maps)",
        "",
        f"Dice of the top {100 * fractions[0]:.0f}..{100 * fractions[-1]:.0f} % voxels (MNI brain "
        f"mask) of the predicted map and of the article's own peak KDE map; AUC = trapezoid area "
        f"under that curve (maximum {span:.2f}). Mean ± std over held-out articles of repeat 0. "
        "Controls: *shuffled articles* scores each article against the prediction the same model "
        "made for another held-out article; *random map* puts random values on as many voxels as "
        "the prediction has non-zero ones (expected Dice = the top fraction).",
        "",
    ]
    keys = ["model", "section", "atlas", "route", "level"]
    at_columns = [c for c in summary.columns if c.startswith("dice_top_")]
    header = [*keys, "n", "Dice AUC", "shuffled articles", "random map"] + at_columns
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    indexed = summary.set_index([*keys, "kind"])
    for key, part in summary.groupby(keys, sort=False):
        if (*key, "model") not in indexed.index:
            continue
        model = indexed.loc[(*key, "model")]
        std = model["dice_auc_std"]
        cells = [*map(str, key), str(int(model["n_articles"])),
                 f"{model['dice_auc_mean']:.4f}" + ("" if pd.isna(std) else f" ± {std:.4f}")]
        for kind in ("shuffled articles", "random map"):
            cells.append(f"{indexed.loc[(*key, kind), 'dice_auc_mean']:.4f}" if (*key, kind) in indexed.index else "–")
        cells += [f"{model[c]:.3f}" for c in at_columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_examples(examples: dict, figure_paths, example_dir, figures) -> None:
    if example_dir is not None:
        Path(example_dir).mkdir(parents=True, exist_ok=True)
    articles = list(examples)
    for i, path in enumerate(figure_paths):
        if i >= len(articles):
            figures.glass_brain_row({}, path, title="fewer held-out articles than examples")
            continue
        article = articles[i]
        figures.glass_brain_row(examples[article], path, title=f"held-out article {article}")
        if example_dir is not None:
            for name, img in examples[article].items():
                safe = "".join(ch if ch.isalnum() else "_" for ch in name)
                save_nifti(img, Path(example_dir) / f"{article}_{safe}.nii.gz")


