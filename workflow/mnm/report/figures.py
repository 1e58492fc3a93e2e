"""Report figures (matplotlib, Agg backend; written atomically as PNG)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mnm.io import atomic_path  # noqa: E402
from mnm.metrics import DIRECTIONS  # noqa: E402

__all__ = [
    "save_figure",
    "recall_bars",
    "hierarchy_histograms",
    "poincare_disk",
    "glass_brain_row",
]


def save_figure(fig, path) -> None:
    """Save ``fig`` as PNG atomically and close it."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def recall_bars(summary: pd.DataFrame, path, models_order=None) -> None:
    """Grouped bars of Recall@K and Mix&Match (mean ± std over folds), one panel per
    section x direction; chance levels as black ticks."""
    table = summary[summary["metric"].isin(["recall", "mix_and_match"])].copy()
    table["label"] = np.where(table["metric"] == "recall", "R@" + table["k"].astype(str), "M&M")
    sections = list(dict.fromkeys(table["section"]))
    models = [m for m in (models_order or dict.fromkeys(table["model"])) if m in set(table["model"])]
    fig, axes = plt.subplots(
        len(sections), len(DIRECTIONS), figsize=(6 * len(DIRECTIONS), 3.2 * len(sections)),
        squeeze=False, sharey=True,
    )
    width = 0.8 / max(len(models), 1)
    for row, section in enumerate(sections):
        for col, direction in enumerate(DIRECTIONS):
            ax = axes[row, col]
            part = table[(table["section"] == section) & (table["direction"] == direction)]
            labels = list(dict.fromkeys(part.sort_values(["metric", "k"], ascending=[False, True])["label"]))
            x = np.arange(len(labels))
            for i, model in enumerate(models):
                values = part[part["model"] == model].set_index("label").reindex(labels)
                ax.bar(x + i * width, 100 * values["mean"], width, yerr=100 * values["std"].fillna(0),
                       label=model, capsize=2)
            chance = part.groupby("label")["chance"].mean().reindex(labels)
            ax.hlines(100 * chance, x - 0.1, x + 0.9 - 0.1, colors="k", linewidth=1)
            ax.set_xticks(x + 0.4 - width / 2, labels)
            ax.set_title(f"{section}: {direction.replace('_', ' ')}")
            ax.set_ylabel("%")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save_figure(fig, path)


def hierarchy_histograms(points: pd.DataFrame, table: pd.DataFrame, path) -> None:
    """2D histograms of brain x0 against n_active, one panel per hyperbolic model x section."""
    groups = list(points.groupby(["model", "section"], sort=False)) if len(points) else []
    n = max(len(groups), 1)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.4), squeeze=False)
    if not groups:
        axes[0, 0].text(0.5, 0.5, "no hyperbolic model trained", ha="center", va="center")
        axes[0, 0].set_axis_off()
    for ax, ((model, section), group) in zip(axes[0], groups):
        ax.hist2d(group["n_active"], group["x0"], bins=(min(30, group["n_active"].nunique() + 1), 30),
                  cmap="viridis", cmin=1)
        pooled = table[(table["model"] == model) & (table["section"] == section)
                       & (table["fold"] == "pooled")]
        tau = pooled["tau"].iloc[0] if len(pooled) else np.nan
        ax.set_title(f"{model} ({section}): τ = {tau:.2f}")
        ax.set_xlabel("active components")
        ax.set_ylabel("brain embedding x0")
    save_figure(fig, path)


def poincare_disk(levels: dict, path, title: str = "") -> None:
    """Parcel embeddings on the unit Poincare disk, one panel per hierarchy level.

    Parameters
    ----------
    levels : dict
        ``{level_name: (coordinates (n, 2), labels (n,))}``.
    """
    fig, axes = plt.subplots(1, len(levels), figsize=(4.6 * len(levels), 4.6), squeeze=False)
    for ax, (level, (coords, labels)) in zip(axes[0], levels.items()):
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="k", linewidth=1))
        radius = np.linalg.norm(coords, axis=1)
        scatter = ax.scatter(coords[:, 0], coords[:, 1], c=radius, cmap="plasma", s=18)
        if len(labels) <= 30:
            for (x, y), label in zip(coords, labels):
                ax.annotate(str(label)[:18], (x, y), fontsize=5)
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        ax.set_title(f"{level} ({len(labels)} parcels)")
        ax.set_axis_off()
        fig.colorbar(scatter, ax=ax, shrink=0.6, label="disk radius")
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def glass_brain_limits(data, top_fraction: float = 0.1) -> tuple[float, float, float] | None:
    """(threshold, vmin, vmax) showing the top ``top_fraction`` of a map's positive voxels.

    The threshold sits just below the quantile, so a map whose top voxels share one value
    still shows them; colours span threshold..max so a nearly flat map (a softmax over
    hundreds of parcels) keeps its contrast, and fall back to 0..max when the top voxels are
    all equal (matplotlib cannot draw an empty colour range). None for an empty map.
    """
    values = np.asarray(data)
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return None
    vmax = float(values.max())
    quantile = float(np.quantile(values, 1 - top_fraction))
    threshold = quantile - 1e-6 * abs(quantile)
    vmin = threshold if vmax - quantile > 1e-6 * vmax else 0.0
    return threshold, vmin, vmax


def glass_brain_row(images: dict, path, top_fraction: float = 0.1, title: str = "") -> None:
    """One row of nilearn glass brains, each image thresholded at its top ``top_fraction``
    of non-zero voxels.

    Parameters
    ----------
    images : dict
        ``{panel title: 3D NIfTI image}``.
    """
    import gc

    from nilearn import plotting

    # nilearn calls gc.collect() on every image access; with torch and many arrays alive a
    # full collection costs ~0.7 s, so existing objects are frozen out of its reach meanwhile.
    gc.freeze()
    try:
        _draw_glass_brains(plotting, images, path, top_fraction, title)
    finally:
        gc.unfreeze()


def _draw_glass_brains(plotting, images: dict, path, top_fraction: float, title: str) -> None:
    fig, axes = plt.subplots(1, max(len(images), 1), figsize=(4.2 * max(len(images), 1), 1.9),
                             squeeze=False)
    if not images:
        axes[0, 0].set_axis_off()
    for ax, (name, img) in zip(axes[0], images.items()):
        threshold, vmin, vmax = glass_brain_limits(img.get_fdata(), top_fraction) or (0.0, None, None)
        plotting.plot_glass_brain(img, threshold=threshold, axes=ax, title=name[:40],
                                  display_mode="ortho", colorbar=False, cmap="YlOrRd",
                                  vmin=vmin, vmax=vmax, plot_abs=False)
    if title:
        fig.suptitle(title, fontsize=8)
    save_figure(fig, path)
