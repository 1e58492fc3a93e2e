"""Multi-level brain-map prediction from text (MNM Fig. 4) and its Dice evaluation.

Two routes turn a text into a voxel map:

* **parcel route** (any contrastive model, MNM's Fig. 4): each parcel of an atlas hierarchy
  level gets a brain vector, embedded by the model's brain encoder; the text embedding is scored
  against every parcel embedding, the scores go through a softmax, and each parcel's weight is
  painted onto its voxels. A parcel's brain vector is the least-squares projection of its binary
  mask on the atlas (``BrainProjector.transform_img``), i.e. the coefficients the brain encoder
  would see for a map that is uniformly active over the parcel; without a projector, the
  indicator of the parcel's components is used (equal for a disjoint atlas up to scale).
* **decoder route** (regression baselines): ``TrainedModel.predict_brain`` gives atlas
  coefficients, mapped to voxels by ``BrainProjector.inverse_transform``.
* **voxel route** (Text2Brain, :data:`mnm.trained.VOXEL_MODELS`): the model's own voxel map
  (``TrainedModel.predict_map``, 4 mm) resampled to the analysis grid by nilearn (continuous
  interpolation). These models have no parcel route: their brain side is a voxel map, not
  atlas coefficients.

Each predicted map is compared with the held-out article's own KDE map of its peaks
(``BrainProjector.kde_img``) by the Dice of their top 5..30 % voxels inside the projector's
MNI brain mask
and the area under that Dice curve (:mod:`mnm.metrics`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from mnm import metrics
from mnm.io import atomic_path, read_matrix, read_parquet, save_nifti, write_parquet

__all__ = [
    "level_columns",
    "informative_levels",
    "parcel_assignment",
    "component_label_volume",
    "parcel_label_volume",
    "parcel_coefficients",
    "parcel_embeddings",
    "parcel_weights",
    "paint_parcels",
    "predict_parcel_map",
    "predict_decoder_map",
    "predict_voxel_map",
    "MapEvaluator",
    "evaluate_fold",
    "evaluate_map_prediction",
    "write_poincare_figure",
]

log = logging.getLogger(__name__)


def level_columns(components: pd.DataFrame) -> list[str]:
    """Hierarchy level columns of ``components.parquet`` (``level_1`` coarsest first)."""
    columns = sorted(
        (c for c in components.columns if c.startswith("level_")),
        key=lambda c: int(c.split("_")[1]) if c.split("_")[1].isdigit() else 0,
    )
    if not columns:
        raise ValueError(f"components table has no level_* column (has {list(components.columns)})")
    return columns


def informative_levels(components: pd.DataFrame, min_parcels: int = 3) -> list[str]:
    """Level columns with at least ``min_parcels`` parcels (e.g. drops AICHA's hemispheres)."""
    levels = [c for c in level_columns(components) if components[c].nunique() >= min_parcels]
    return levels or level_columns(components)[-1:]


def parcel_assignment(components: pd.DataFrame, level: str) -> tuple[list[str], np.ndarray]:
    """Parcels of one level and the parcel index of every component.

    Returns
    -------
    names : list of str
        Parcel labels in order of first appearance.
    component_parcel : numpy.ndarray of int, shape (n_components,)
    """
    if level not in components.columns:
        raise ValueError(f"components table has no column {level!r}")
    labels = components[level].astype(str).to_numpy()
    names = list(dict.fromkeys(labels))
    lookup = {name: i for i, name in enumerate(names)}
    return names, np.array([lookup[label] for label in labels], dtype=np.int64)


def component_label_volume(maps_img, projector=None) -> np.ndarray:
    """3D array of the component index of each voxel (-1 outside every component).

    A voxel belongs to the component with the largest map value there (the usual
    max-probability labelling of a probabilistic atlas; exact for a deterministic one).
    Computing this is an argmax over the 4D atlas: do it once and pass the result to
    :func:`parcel_label_volume` for every level. With a fitted ``projector`` the argmax
    runs over its atlas voxels only (same result: every other voxel is -1).
    """
    if projector is not None:
        design = projector.design_
        winner = np.where(design.max(axis=1) > 0, design.argmax(axis=1), -1)
        volume = np.full(projector.atlas_voxels_.shape, -1, dtype=np.int64)
        volume[projector.atlas_voxels_] = winner
        return volume
    maps = np.asarray(maps_img.dataobj, dtype=np.float32)
    if maps.ndim != 4:
        raise ValueError(f"atlas must be 4D, got shape {maps.shape}")
    winner = maps.argmax(axis=3)
    winner[maps.max(axis=3) <= 0] = -1
    return winner


def parcel_label_volume(maps_img_or_labels, component_parcel: np.ndarray) -> np.ndarray:
    """3D array of the parcel index of each voxel (-1 outside every component).

    Parameters
    ----------
    maps_img_or_labels : 4D image, or 3D int array from :func:`component_label_volume`
    component_parcel : (n_components,) int array
        Parcel index of each component (:func:`parcel_assignment`).
    """
    if isinstance(maps_img_or_labels, np.ndarray) and maps_img_or_labels.ndim == 3:
        components = maps_img_or_labels
    else:
        components = component_label_volume(maps_img_or_labels)
        if maps_img_or_labels.shape[3] != len(component_parcel):
            raise ValueError(
                f"atlas has shape {maps_img_or_labels.shape} but components table has "
                f"{len(component_parcel)} rows"
            )
    component_parcel = np.asarray(component_parcel, dtype=np.int64)
    return np.where(components >= 0, component_parcel[np.maximum(components, 0)], -1)


def parcel_coefficients(
    maps_img, components: pd.DataFrame, level: str, projector=None, zscore: bool = False,
    component_labels: np.ndarray | None = None,
) -> tuple[list[str], np.ndarray]:
    """Brain vectors (atlas coefficients) of the parcels of one hierarchy level.

    Parameters
    ----------
    maps_img : nibabel image, 4D
        The atlas maps (``atlas.nii.gz``).
    components : pandas.DataFrame
        ``components.parquet``.
    level : str
        Level column, e.g. ``level_1``.
    projector : mnm.brain.BrainProjector, optional
        When given, a parcel's vector is ``projector.transform_img`` of its binary mask;
        otherwise the 0/1 indicator of its components.
    zscore : bool
        z-score each vector across components, as the brain stage does when
        ``brain.zscore`` is set, so the encoder sees features on its training scale.
    component_labels : 3D int array, optional
        :func:`component_label_volume` of ``maps_img``, when already computed.

    Returns
    -------
    names : list of str
    coefficients : numpy.ndarray, float32 (n_parcels, n_components)
    """
    names, component_parcel = parcel_assignment(components, level)
    if projector is None:
        coefs = (component_parcel[None, :] == np.arange(len(names))[:, None]).astype(np.float32)
    else:
        if component_labels is None:
            component_labels = component_label_volume(maps_img, projector)
        labels = parcel_label_volume(component_labels, component_parcel)
        coefs = projector.transform_labels(labels, len(names))
    if zscore:
        from mnm.brain import zscore_rows

        coefs = zscore_rows(coefs)
    return names, coefs.astype(np.float32)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def parcel_embeddings(trained, coefficients: np.ndarray) -> np.ndarray:
    """Embed parcel brain vectors with a trained model's brain encoder (as it scores them)."""
    return _numpy(trained.embed_brain(np.asarray(coefficients, dtype=np.float32)))


def parcel_weights(trained, text_embedding, parcel_embedding, temperature: float = 1.0):
    """Softmax over parcels of the model's scores of one text embedding against each parcel."""
    text_embedding = np.atleast_2d(np.asarray(text_embedding, dtype=np.float32))
    scores = _numpy(trained.score(text_embedding, np.asarray(parcel_embedding, dtype=np.float32)))
    scores = scores.ravel() / float(temperature)
    weights = np.exp(scores - scores.max())
    return weights / weights.sum()


def paint_parcels(weights: np.ndarray, label_volume: np.ndarray, affine) -> nib.Nifti1Image:
    """Voxel map whose value in each parcel is that parcel's weight (0 outside the atlas)."""
    weights = np.asarray(weights, dtype=np.float32)
    data = np.zeros(label_volume.shape, dtype=np.float32)
    inside = label_volume >= 0
    data[inside] = weights[label_volume[inside]]
    return nib.Nifti1Image(data, affine)


def predict_parcel_map(
    trained, text_embedding, parcel_embedding, label_volume, affine, temperature: float = 1.0
) -> nib.Nifti1Image:
    """Parcel-route map of one text: softmax parcel weights painted onto parcel voxels."""
    weights = parcel_weights(trained, text_embedding, parcel_embedding, temperature)
    return paint_parcels(weights, label_volume, affine)


def predict_decoder_map(trained, text_input, projector) -> nib.Nifti1Image | None:
    """Decoder-route map: ``predict_brain`` coefficients -> ``inverse_transform`` voxels.

    Returns None when the model has no decoder.
    """
    coefficients = trained.predict_brain(text_input)
    if coefficients is None:
        return None
    coefficients = np.atleast_2d(_numpy(coefficients))[0]
    return projector.inverse_transform(coefficients.astype(np.float32))


def predict_voxel_map(trained, text_input, target_img) -> nib.Nifti1Image | None:
    """Voxel-route map: ``predict_map`` resampled onto ``target_img``'s grid (None without one)."""
    from nilearn.image import resample_to_img

    predict_map = getattr(trained, "predict_map", None)  # absent on stand-in models
    img = None if predict_map is None else predict_map(text_input)
    if img is None:
        return None
    return resample_to_img(img, target_img, interpolation="continuous", force_resample=True, copy_header=True)


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
        self._truth: dict[str, np.ndarray] = {}
        self.truth_imgs: dict[str, nib.Nifti1Image] = {}

    def truth_ranks(self, article: str, keep_img: bool = False) -> np.ndarray:
        """Voxel ranks of the article's own KDE map (cached)."""
        if article not in self._truth:
            if article not in self.peaks:
                raise ValueError(f"article {article} has no peaks in the corpus")
            img = self.projector.kde_img(self.peaks[article])
            self._truth[article] = metrics.voxel_ranks(_voxels(img, self.mask)).astype(np.int32)
            if keep_img:
                self.truth_imgs[article] = img
        return self._truth[article]

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

    def random_map_ranks(self, n_active: int, rng) -> np.ndarray:
        """Voxel ranks of a random map with ``n_active`` non-zero voxels at random places."""
        values = np.zeros(int(self.mask.sum()), dtype=np.float32)
        values[rng.choice(values.size, size=min(int(n_active), values.size), replace=False)] = rng.random(
            min(int(n_active), values.size), dtype=np.float32) + 1.0
        return metrics.voxel_ranks(values).astype(np.int32)


def _dice_rows(keys: dict, kind: str, article: str, fractions, pred_ranks, truth_ranks) -> list[tuple]:
    curve = metrics.dice_curve_from_ranks(pred_ranks, truth_ranks, fractions)
    return [(keys["model"], keys["section"], keys["route"], keys["level"], kind, keys["fold"], article, f, d)
            for f, d in zip(fractions, curve)]


def evaluate_fold(evaluator: MapEvaluator, trained, keys: dict, ids, text_emb, decoder_inputs,
                  fractions, articles_per_fold, seed: int, temperature: float = 1.0, keep_truth: bool = False):
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
    parcel_emb = ({lvl: parcel_embeddings(trained, evaluator.parcel_vectors[lvl]) for lvl in evaluator.levels}
                  if getattr(trained, "brain_input", "coefficients") == "coefficients" else {})  # voxel-map models: no parcel route
    rng = np.random.default_rng(seed + keys["fold"])
    ranks, counts, examples = {}, {}, {}
    for index in picked:
        article = str(ids[index])
        evaluator.truth_ranks(article, keep_img=keep_truth)
        decoder_input = decoder_inputs.get(trained, keys["section"], article)
        maps = evaluator.predictions(trained, text_emb[index], parcel_emb, decoder_input, temperature)
        for route_level, img in maps.items():
            voxels = _voxels(img, evaluator.mask)
            ranks[(route_level, article)] = metrics.voxel_ranks(voxels).astype(np.int32)
            counts[(route_level, article)] = int(np.count_nonzero(voxels))
        examples[article] = maps
    articles = [str(ids[i]) for i in picked]
    # Each article is scored against another article's prediction (a cyclic shift of the
    # evaluated articles: a derangement when there are at least two).
    partner = dict(zip(articles, articles[1:] + articles[:1]))
    rows = []
    for (route_level, article), pred in ranks.items():
        where = {**keys, "route": route_level[0], "level": route_level[1]}
        truth = evaluator.truth_ranks(article)
        rows += _dice_rows(where, "model", article, fractions, pred, truth)
        if len(articles) > 1 and (route_level, partner[article]) in ranks:
            rows += _dice_rows(where, "shuffled articles", article, fractions,
                               ranks[(route_level, partner[article])], truth)
        rows += _dice_rows(where, "random map", article, fractions,
                           evaluator.random_map_ranks(counts[(route_level, article)], rng), truth)
    return rows, examples


def evaluate_map_prediction(
    model_paths,
    test_embedding_paths,
    atlas_dir,
    peaks,
    text_inputs,
    articles,
    out_dice,
    out_summary,
    out_markdown,
    example_figures=(),
    example_dir=None,
    fractions=(0.05, 0.10, 0.15, 0.20, 0.25, 0.30),
    fwhm_mm: float = 9.0,
    zscore: bool = False,
    articles_per_fold: int | None = 20,
    temperature: float = 1.0,
    example_model: str = "mnm",
    seed: int = 0,
):
    """Dice of predicted maps against held-out articles' KDE maps, for every model and fold.

    Parameters
    ----------
    model_paths, test_embedding_paths : list of path-like
        Per-fold ``model.safetensors`` and ``test_embeddings.parquet`` (aligned; one repeat).
    atlas_dir : path-like
        Folder with ``atlas.nii.gz`` and ``components.parquet``.
    peaks : path-like
        ``corpus/peaks.parquet``.
    text_inputs : dict
        ``{section: text/{encoder}/{section}/embeddings.parquet}``, the decoder route's input
        features (the TF-IDF model reads the section's raw text from ``articles`` instead).
    articles : path-like
        ``corpus/articles.parquet``.
    out_dice, out_summary, out_markdown : path-like
        Per article x fraction Dice (model, section, route, level, kind, fold, article_id,
        fraction, dice), per model x route x level x kind Dice-curve area (mean ± std over
        articles), Markdown table.
    example_figures : list of path-like
        Glass-brain PNGs of the first held-out articles of the first fold (truth, predictions).
    example_dir : path-like, optional
        Folder receiving the example maps as NIfTI.
    articles_per_fold : int or None
        Held-out articles evaluated per fold (None = all); each costs one dense KDE map.
    temperature : float
        Softmax temperature of the parcel route (Dice depends only on the parcel order).
    example_model : str
        Model drawn in the example figures (the first model when it was not trained).
    """
    from mnm.report import figures
    from mnm.report.retrieval import parse_fold_path
    from mnm.scoring import read_embeddings
    from mnm.trained import load_trained

    if len(model_paths) != len(test_embedding_paths):
        raise ValueError(f"{len(model_paths)} model files but {len(test_embedding_paths)} test files")
    for model_path, test_path in zip(model_paths, test_embedding_paths):
        if parse_fold_path(model_path) != parse_fold_path(test_path):
            raise ValueError(f"{model_path} and {test_path} are not the same model and fold")
    pairs = [(m, t) for m, t in zip(model_paths, test_embedding_paths) if parse_fold_path(m)["fold"].isdigit()]
    if not pairs:
        raise ValueError("no per-fold model given for map prediction")
    evaluator = MapEvaluator(atlas_dir, peaks, fwhm_mm, zscore)
    decoder_inputs = DecoderInputs(text_inputs, articles)
    first_fold = min(int(parse_fold_path(m)["fold"]) for m, _ in pairs)
    names = [parse_fold_path(m)["model"] for m, _ in pairs]
    example_model = example_model if example_model in names else names[0]
    rows, examples = [], {}
    for model_path, test_path in tqdm(pairs, desc="map prediction"):
        path_keys = parse_fold_path(model_path)
        keys = {"model": path_keys["model"], "section": path_keys["section"], "fold": int(path_keys["fold"])}
        ids, text_emb, _, _ = read_embeddings(test_path)
        is_example = keys["fold"] == first_fold and keys["model"] == example_model and not examples
        fold_rows, fold_examples = evaluate_fold(
            evaluator, load_trained(model_path), keys, ids, text_emb, decoder_inputs, fractions,
            articles_per_fold, seed, temperature, keep_truth=keys["fold"] == first_fold)
        rows += fold_rows
        if is_example:
            for article, maps in list(fold_examples.items())[: len(example_figures)]:
                examples[article] = {"truth: KDE of its peaks": evaluator.truth_imgs[article]} | {
                    f"{keys['model']} {route} {lvl}": img for (route, lvl), img in maps.items()}
    dice = pd.DataFrame(rows, columns=["model", "section", "route", "level", "kind", "fold",
                                       "article_id", "fraction", "dice"])
    summary = summarise_dice(dice, fractions)
    write_parquet(dice, out_dice)
    write_parquet(summary, out_summary)
    with atomic_path(out_markdown) as tmp:
        tmp.write_text(dice_markdown(summary, fractions))
    _write_examples(examples, example_figures, example_dir, figures)
    return summary


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

            if section not in self._texts:
                self._texts[section] = section_texts(read_parquet(self.articles_path), section)
            texts = self._texts[section]
            return [texts.loc[article]] if article in texts.index else None
        if section not in self.paths:
            raise ValueError(f"no text embeddings given for section {section!r}")
        if section not in self._matrices:
            ids, matrix = read_matrix(self.paths[section])
            self._matrices[section] = ({str(a): i for i, a in enumerate(ids)}, matrix)
        rows, matrix = self._matrices[section]
        return matrix[[rows[article]]] if article in rows else None


def summarise_dice(dice: pd.DataFrame, fractions) -> pd.DataFrame:
    """Area under each article's Dice curve, then mean ± std (ddof=1) over articles."""
    keys = ["model", "section", "route", "level", "kind"]
    if dice.empty:
        return pd.DataFrame(columns=keys + ["dice_auc_mean", "dice_auc_std", "n_articles"])
    areas = (
        dice.sort_values("fraction")
        .groupby(keys + ["fold", "article_id"], sort=False)
        .apply(lambda g: metrics.dice_auc(g["fraction"], g["dice"]), include_groups=False)
        .rename("auc").reset_index()
    )
    summary = areas.groupby(keys, sort=False)["auc"].agg(
        dice_auc_mean="mean", dice_auc_std=lambda v: v.std(ddof=1), n_articles="count")
    at = dice.groupby(keys + ["fraction"], sort=False)["dice"].mean().unstack("fraction")
    at.columns = [f"dice_top_{round(100 * f)}" for f in at.columns]
    return summary.join(at).reset_index()


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
    keys = ["model", "section", "route", "level"]
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


def write_poincare_figure(model_paths: dict, atlas_dir, coefficients, out_png, fwhm_mm: float = 9.0,
                          zscore: bool = False, levels=None) -> None:
    """Poincare disk of hyperbolic models: parcels at two atlas levels and all articles.

    Parameters
    ----------
    model_paths : dict
        ``{label: model.safetensors}`` of fold-all hyperbolic models, e.g. MNM with and without
        L_hier; one figure row each.
    atlas_dir : path-like
        The atlas stage's folder.
    coefficients : path-like
        ``coefficients.parquet``: every article's brain vector, drawn coloured by its number of
        active components (its breadth).
    levels : list of str, optional
        Two level columns; by default the two coarsest with at least 3 parcels (AICHA: gyral
        structures and regions; DiFuMo: Yeo 7 and Yeo 17 networks).

    Points are placed by :func:`mnm.report.hierarchy.poincare_disk_coordinates`: exact distance
    to the origin, 2-D direction by PCA of the tangent vectors.
    """
    from mnm.atlas import read_atlas
    from mnm.brain import BrainProjector
    from mnm.io import read_matrix
    from mnm.report import figures
    from mnm.report.hierarchy import poincare_disk_coordinates
    from mnm.trained import load_trained

    maps_img, components = read_atlas(atlas_dir)
    levels = list(levels or informative_levels(components)[:2])
    projector = BrainProjector(maps_img, fwhm_mm=fwhm_mm).fit(lookup_table=False)
    labels = component_label_volume(maps_img, projector)
    parcels = {level: parcel_coefficients(maps_img, components, level, projector, zscore, labels)
               for level in levels}
    _, article_coefs = read_matrix(coefficients, "coefficients")
    n_active = read_parquet(coefficients, columns=["n_active"])["n_active"].to_numpy()
    rows = {}
    for label, path in model_paths.items():
        trained = load_trained(path)
        c = trained.curvature
        panels = {}
        for level, (names, coefs) in parcels.items():
            coords = poincare_disk_coordinates(trained.embed_brain(coefs), c)
            panels[f"{level} parcels ({len(names)})"] = (coords, names, np.linalg.norm(coords, axis=1), "disk radius")
        coords = poincare_disk_coordinates(trained.embed_brain(article_coefs), c)
        panels[f"articles ({len(coords)})"] = (coords, None, n_active, "active parcels")
        rows[label] = panels
    figures.poincare_disk(rows, out_png, title="Poincare disk (fold-all models; radius = exact distance to the origin)")
