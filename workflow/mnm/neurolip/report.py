"""NeuroLIP report page: diagnosis and fairness table, planted-effect recovery, attention maps.

Writes into ``results/report/neurolip/``: ``neurolip.md`` (the page), ``summary.parquet``
(mean, std and number of folds of every metric per variant and readout), ``attention.parquet``
(attention per word and variant, averaged over folds), ``mnm_correlation.parquet`` (see
:mod:`mnm.neurolip.compare`) and ``maps/`` (one NIfTI per variant and word of the slots
:data:`MAP_SLOTS`, one glass-brain PNG per variant; the attention of every word, site names
included, is in ``attention.parquet``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mnm.io import read_matrix, read_parquet, write_matrix, write_parquet
from mnm.neurolip.compare import compare_with_mnm
from mnm.neurolip.rois import RoiAtlas

__all__ = ["summarise", "results_markdown", "mean_attention", "write_report"]

logger = logging.getLogger(__name__)

TABLE_METRICS = [("accuracy", "Accuracy"), ("auc", "AUC"), ("f1", "F1"), ("dp_sex", "DP sex"),
                 ("eo_sex", "EO sex"), ("dp_site", "DP site"), ("eo_site", "EO site")]
#: Slots whose words are drawn as maps (a site list can be long: its words stay in the table).
MAP_SLOTS = ("diagnosis", "sex")
PLANTED_METRICS = [("edge_auc_pattern", "planted-edge AUC"),
                   ("diagnosis_attention_on_diagnosis_rois", "disease attention on diagnosis ROIs"),
                   ("diagnosis_attention_on_sex_rois", "disease attention on sex ROIs"),
                   ("region_auc_attention", "diagnosis-ROI AUC of attention")]


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and fold count of every (variant, readout, metric)."""
    grouped = metrics.groupby(["variant", "readout", "metric"], sort=False)["value"]
    return grouped.agg(mean="mean", std="std", n_folds="count").reset_index()


def _cell(summary: pd.DataFrame, variant: str, readout: str, metric: str) -> str:
    row = summary[(summary["variant"] == variant) & (summary["readout"] == readout) & (summary["metric"] == metric)]
    if row.empty or not np.isfinite(row["mean"].iloc[0]):
        return "n/a"
    std = row["std"].iloc[0]
    return f"{row['mean'].iloc[0]:.3f} ± {std:.3f}" if np.isfinite(std) else f"{row['mean'].iloc[0]:.3f}"


def results_markdown(summary: pd.DataFrame, metric_names=TABLE_METRICS, readouts=None) -> str:
    """Markdown table, one row per (variant, readout), ``mean ± std`` over folds."""
    pairs = summary[["variant", "readout"]].drop_duplicates()
    if readouts is not None:
        pairs = pairs[pairs["readout"].isin(readouts)]
    header = "| model | readout | " + " | ".join(label for _, label in metric_names) + " |"
    lines = [header, "|" + "---|" * (len(metric_names) + 2)]
    for variant, readout in pairs.itertuples(index=False):
        cells = [_cell(summary, variant, readout, m) for m, _ in metric_names]
        lines.append(f"| {variant} | {readout} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_attention(paths) -> pd.DataFrame:
    """Attention per (variant, word, slot), averaged over the folds' ``attention.parquet``."""
    frames = []
    for path in paths:
        variant = Path(path).parent.parent.name
        words, vectors = read_matrix(path, column="attention", id_column="word")
        meta = read_parquet(path, columns=["word", "slot", "n_subjects"])
        frames.append(meta.assign(variant=variant, attention=list(vectors)))
    table = pd.concat(frames, ignore_index=True)
    rows = []
    for (variant, word, slot), group in table.groupby(["variant", "word", "slot"], sort=False):
        rows.append({"variant": variant, "word": word, "slot": slot, "n_subjects": int(group["n_subjects"].sum()),
                     "attention": np.mean(np.stack(group["attention"].to_list()), axis=0)})
    return pd.DataFrame(rows)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _draw_maps(attention: pd.DataFrame, atlas: RoiAtlas, maps_dir: Path, generated: bool) -> list[str]:
    from mnm.io import save_nifti
    from mnm.report.figures import glass_brain_row

    lines = []
    maps_dir.mkdir(parents=True, exist_ok=True)
    prefix = "GENERATED_" if generated else ""
    for variant, group in attention[attention["slot"].isin(MAP_SLOTS)].groupby("variant", sort=False):
        images = {}
        for row in group.itertuples():
            img = atlas.paint(row.attention)
            save_nifti(img, maps_dir / f"{prefix}{variant}_{_slug(row.word)}.nii.gz")
            images[f"{row.word} ({row.slot})"] = img
        png = maps_dir / f"{prefix}{variant}.png"
        caption = f"{variant}: token attention over ROIs" + (" (GENERATED data)" if generated else "")
        glass_brain_row(images, png, top_fraction=0.2, title=caption)
        lines.append(f"![{caption}](maps/{png.name})")
    return lines


def _compare_markdown(table: pd.DataFrame) -> str:
    lines = ["| word | status | Pearson r | Spearman rho | ROIs | note |", "|---|---|---|---|---|---|"]
    for row in table.itertuples():
        fmt = (lambda v: "n/a" if not np.isfinite(v) else f"{v:.3f}")
        lines.append(f"| {row.word} | {row.status} | {fmt(row.pearson)} | {fmt(row.spearman)} | {row.n_regions} | "
                     f"{row.reason} |")
    return "\n".join(lines)


def write_report(metric_paths, attention_paths, out_dir, *, dataset: str, atlas_image=None, atlas_names=None,
                 compare_config=None, compare_model: str = "mnm", compare_words=("autism",),
                 compare_variant: str = "full") -> None:
    """Aggregate the per-fold outputs and write the report folder (module docstring)."""
    out_dir = Path(out_dir)
    generated = dataset == "generated"
    metrics = pd.concat([read_parquet(p) for p in metric_paths], ignore_index=True)
    summary = summarise(metrics)
    attention = mean_attention(attention_paths)
    atlas = RoiAtlas(atlas_image, atlas_names) if atlas_image else None
    chosen = attention[(attention["variant"] == compare_variant) & attention["word"].isin(compare_words)]
    comparison = compare_with_mnm(dict(zip(chosen["word"], chosen["attention"])), atlas, compare_config,
                                  compare_model) if compare_config else compare_with_mnm({}, atlas, "", compare_model)
    label = "GENERATED fixture (not ABIDE data)" if generated else dataset
    n_folds = int(metrics["fold"].nunique())
    lines = [f"# NeuroLIP: {label}", ""]
    if generated:
        lines += ["**Every figure on this page is measured on GENERATED data** (planted diagnosis, sex and site "
                  "edges; see docs/neurolip.md). It checks that the method does what it should, not how it does "
                  "on ABIDE.", ""]
    lines += [f"Diagnosis and fairness on the held-out subjects, mean ± std over {n_folds} folds "
              "(DP: demographic parity difference, EO: equalised odds difference; lower is fairer).", "",
              results_markdown(summary, readouts=["zero_shot", "probe", "logreg"]), ""]
    if (summary["readout"] == "planted").any():
        lines += ["Recovery of the planted effects (GENERATED data; chance: AUC 0.5, attention share = share of "
                  "ROIs).", "", results_markdown(summary, PLANTED_METRICS, readouts=["planted"]), ""]
    lines += ["## Token attention maps", ""]
    if atlas is not None:
        lines += _draw_maps(attention, atlas, out_dir / "maps", generated)
    else:
        (out_dir / "maps").mkdir(parents=True, exist_ok=True)
        lines += ["No ROI atlas image for this dataset (set `neurolip.atlas_image`): maps not drawn; the "
                  "attention vectors are in `attention.parquet`."]
    lines += ["", f"## Attention vs this pipeline's text -> brain prediction ({compare_variant} model)", "",
              _compare_markdown(comparison), ""]
    if generated:
        lines += ["(On GENERATED data the planted edges are arbitrary, so a correlation with a meta-analytic map "
                  "is not expected.)", ""]
    write_parquet(summary, out_dir / "summary.parquet")
    write_matrix(out_dir / "attention.parquet", attention["word"], np.stack(attention["attention"].to_list()),
                 column="attention", id_column="word",
                 extra={"variant": attention["variant"].to_numpy(object), "slot": attention["slot"].to_numpy(object),
                        "n_subjects": attention["n_subjects"].to_numpy()})
    write_parquet(comparison, out_dir / "mnm_correlation.parquet")
    from mnm.io import atomic_path

    with atomic_path(out_dir / "neurolip.md", suffix=".md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    logger.info("NeuroLIP report: %s", out_dir / "neurolip.md")
