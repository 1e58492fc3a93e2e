"""Report figures (matplotlib, Agg backend; written atomically as PNG)."""

from __future__ import annotations

import contextlib
import gc

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
    "radius_histograms",
    "tradeoff_curve",
    "poincare_disk",
    "glass_brain_row",
    "frozen_gc",
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
    if "atlas" in table and table["atlas"].nunique() > 1:  # one row of panels per (atlas, section)
        table["section"] = table["atlas"] + ", " + table["section"]
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
    """2D histograms of brain radius against n_active, one panel per hyperbolic model x section x atlas."""
    groups = list(points.groupby(["model", "section", "atlas"], sort=False)) if len(points) else []
    n = max(len(groups), 1)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.4), squeeze=False)
    if not groups:
        axes[0, 0].text(0.5, 0.5, "no hyperbolic model trained", ha="center", va="center")
        axes[0, 0].set_axis_off()
    for ax, ((model, section, atlas), group) in zip(axes[0], groups):
        ax.hist2d(group["n_active"], group["brain_radius"],
                  bins=(min(30, group["n_active"].nunique() + 1), 30), cmap="viridis", cmin=1)
        mean = table[(table["model"] == model) & (table["section"] == section) & (table["atlas"] == atlas)
                     & (table["fold"] == "mean")]
        tau = mean["tau"].iloc[0] if len(mean) else np.nan
        ax.set_title(f"{model} ({section}, {atlas}): τ = {tau:.2f}", fontsize=9)
        ax.set_xlabel("active components")
        ax.set_ylabel("brain radius d(x, O)")
    save_figure(fig, path)


def radius_histograms(points: pd.DataFrame, geometry: pd.DataFrame, path) -> None:
    """Histograms of the distance to the origin per model (rows) and modality (columns)."""
    groups = list(points.groupby(["model", "section", "atlas"], sort=False)) if len(points) else []
    fig, axes = plt.subplots(max(len(groups), 1), 2, figsize=(8, 2.4 * max(len(groups), 1)), squeeze=False)
    if not groups:
        for ax in axes[0]:
            ax.set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no hyperbolic model trained", ha="center", va="center")
    for row, ((model, section, atlas), group) in enumerate(groups):
        for col, modality in enumerate(("brain", "text")):
            ax = axes[row, col]
            ax.hist(group[f"{modality}_radius"], bins=40, color="C0" if modality == "brain" else "C1")
            info = geometry[(geometry["model"] == model) & (geometry["section"] == section)
                            & (geometry["atlas"] == atlas) & (geometry["modality"] == modality)]
            cv = info["radius_cv"].iloc[0] if len(info) else np.nan
            ax.set_title(f"{model} ({section}, {atlas}) {modality}: CV {cv:.3f}", fontsize=9)
            ax.set_xlabel("distance to the origin")
    save_figure(fig, path)


def tradeoff_curve(summary: pd.DataFrame, baseline: dict, path) -> None:
    """Test Recall@10 against Kendall tau(brain radius, active parcels), one line per radius
    head, points labelled by lambda_hier; NeuroConText's Recall@10 as a horizontal band."""
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for i, (head, part) in enumerate(summary.groupby("head", sort=False)):
        part = part.sort_values("lambda_hier")
        ax.errorbar(part["tau_mean"], 100 * part["recall_mean"], xerr=part["tau_std"],
                    yerr=100 * part["recall_std"], marker="o", capsize=2, label=f"MNM, {head} radius",
                    color=f"C{i}")
        for row in part.itertuples():
            ax.annotate(f"λ={row.lambda_hier:g}", (row.tau_mean, 100 * row.recall_mean), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    if baseline:
        ax.axhline(100 * baseline["mean"], color="k", linewidth=1, label="NeuroConText")
        ax.axhspan(100 * (baseline["mean"] - baseline["std"]), 100 * (baseline["mean"] + baseline["std"]),
                   color="k", alpha=0.08)
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("Kendall τ (brain radius, active parcels)  ← hierarchy")
    ax.set_ylabel("test Recall@10 (%), mean of both directions")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def poincare_disk(rows: dict, path, title: str = "") -> None:
    """Points on the unit Poincare disk: one row per model, one panel per point set.

    Parameters
    ----------
    rows : dict
        ``{row_label: {panel_title: (coordinates (n, 2), labels or None, colour values (n,),
        colour label)}}``; labels are written next to the points when there are at most 30.
    """
    n_cols = max(len(panels) for panels in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(4.3 * n_cols, 4.3 * len(rows)), squeeze=False)
    for r, (row_label, panels) in enumerate(rows.items()):
        for c in range(n_cols):
            axes[r, c].set_axis_off()
        for c, (panel, (coords, labels, colours, colour_label)) in enumerate(panels.items()):
            ax = axes[r, c]
            ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="k", linewidth=1))
            scatter = ax.scatter(coords[:, 0], coords[:, 1], c=colours, cmap="plasma", s=10)
            if labels is not None and len(labels) <= 30:
                for (x, y), label in zip(coords, labels):
                    ax.annotate(str(label)[:18], (x, y), fontsize=5)
            ax.set_xlim(-1.05, 1.05)
            ax.set_ylim(-1.05, 1.05)
            ax.set_aspect("equal")
            ax.set_title(f"{row_label}: {panel}", fontsize=9)
            fig.colorbar(scatter, ax=ax, shrink=0.6, label=colour_label)
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


@contextlib.contextmanager
def frozen_gc():
    """Keep the objects that exist now out of the garbage collector's reach for a block.

    nilearn calls ``gc.collect()`` on every image access; with torch and many arrays alive a
    full collection costs ~0.7 s (a query's five glass brains: 23 s -> 6 s when frozen, and
    3.5 of 6 s of a NiMARE ALE fit), so nilearn-heavy blocks run inside this.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def glass_brain_row(images: dict, path, top_fraction: float = 0.1, title: str = "") -> None:
    """One row of nilearn glass brains, each image thresholded at its top ``top_fraction``
    of non-zero voxels.

    Parameters
    ----------
    images : dict
        ``{panel title: 3D NIfTI image}``.
    """
    from nilearn import plotting

    with frozen_gc():
        _draw_glass_brains(plotting, images, path, top_fraction, title)


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
