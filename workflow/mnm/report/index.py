"""The report's Markdown index page: every table and figure, linked relative to the page."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mnm.io import atomic_path

__all__ = ["hierarchy_markdown", "write_index"]


def _link(target, page_dir: Path) -> str:
    return Path(os.path.relpath(Path(target), page_dir)).as_posix()


def hierarchy_markdown(table: pd.DataFrame, geometry: pd.DataFrame) -> str:
    """Markdown of the per-model Kendall tau (mean ± std over test sets, pooled) and radii."""
    if table.empty:
        return "No hyperbolic model was trained: no hierarchy analysis.\n"
    lines = ["| model | section | atlas | tau (mean ± std over test sets) | tau (pooled) | p (pooled) | n "
             "| brain radius mean (CV) | text radius mean (CV) | angle top-10 ≠ cosine top-10 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    radius = geometry.set_index(["model", "section", "atlas", "modality"])
    for (model, section, atlas), group in table.groupby(["model", "section", "atlas"], sort=False):
        mean = group[group["fold"] == "mean"].iloc[0]
        pooled = group[group["fold"] == "pooled"].iloc[0]
        std = "" if pd.isna(mean["tau_std"]) else f" ± {mean['tau_std']:.3f}"
        brain, text = radius.loc[(model, section, atlas, "brain")], radius.loc[(model, section, atlas, "text")]
        lines.append(f"| {model} | {section} | {atlas} | {mean['tau']:.3f}{std} | {pooled['tau']:.3f} "
                     f"| {pooled['p_value']:.2g} | {int(pooled['n'])} "
                     f"| {brain['radius_mean']:.3f} ({brain['radius_cv']:.3f}) "
                     f"| {text['radius_mean']:.3f} ({text['radius_cv']:.3f}) | {100 * brain['top10_differs']:.0f} % |")
    return "\n".join(lines) + "\n"


def write_index(out_markdown, retrieval_md, tables, hierarchy, geometry, map_md, figures,
                tradeoff_md=None) -> None:
    """Write ``report/index.md``.

    Parameters
    ----------
    out_markdown : path-like
        The index page.
    retrieval_md, map_md : path-like
        Markdown tables included verbatim (their first heading demoted one level).
    tables : list of path-like
        Parquet tables, linked.
    hierarchy, geometry : path-like
        ``hierarchy.parquet`` and ``geometry.parquet``, summarised inline.
    tradeoff_md : path-like, optional
        The trade-off sweep's Markdown, included verbatim.
    figures : list of path-like
        PNG figures, embedded.
    """
    page_dir = Path(out_markdown).parent
    parts = ["# MNM evaluation report", ""]
    for path in (retrieval_md, *([tradeoff_md] if tradeoff_md else []), map_md):
        text = Path(path).read_text()
        parts += ["#" + text if text.startswith("# ") else text, f"Source: [{Path(path).name}]"
                  f"({_link(path, page_dir)})", ""]
    parts += ["## Hierarchy and geometry of the hyperbolic models", "",
              "Kendall's tau between the held-out brain embeddings' distance to the origin and "
              "their number of active components: negative when broad maps lie nearer the origin "
              "(MNM paper: -0.58 with L_hier, -0.30 without). Radius CV: spread of the distances "
              "to the origin (0 = every embedding at one radius). Last column: share of text "
              "queries whose top-10 under the angle score differs from plain cosine.", "",
              hierarchy_markdown(pd.read_parquet(hierarchy), pd.read_parquet(geometry)), ""]
    parts += ["## Tables", ""]
    parts += [f"- [{Path(t).name}]({_link(t, page_dir)})" for t in [*tables, hierarchy, geometry]]
    parts += ["", "## Figures", ""]
    for figure in figures:
        name = Path(figure).stem.replace("_", " ")
        parts += [f"### {name}", "", f"![{name}]({_link(figure, page_dir)})", ""]
    with atomic_path(out_markdown) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
