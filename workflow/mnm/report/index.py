"""The report's Markdown index page: every table and figure, linked relative to the page."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mnm.io import atomic_path

__all__ = ["hierarchy_markdown", "write_index"]


def _link(target, page_dir: Path) -> str:
    return Path(os.path.relpath(Path(target), page_dir)).as_posix()


def hierarchy_markdown(table: pd.DataFrame) -> str:
    """Markdown of the per-model Kendall tau (mean ± std over folds, and pooled)."""
    if table.empty:
        return "No hyperbolic model was trained: no hierarchy analysis.\n"
    lines = ["| model | section | tau (mean ± std over folds) | tau (pooled) | p (pooled) | n |",
             "|---|---|---|---|---|---|"]
    for (model, section), group in table.groupby(["model", "section"], sort=False):
        mean = group[group["fold"] == "mean"].iloc[0]
        pooled = group[group["fold"] == "pooled"].iloc[0]
        std = "" if pd.isna(mean["tau_std"]) else f" ± {mean['tau_std']:.3f}"
        lines.append(f"| {model} | {section} | {mean['tau']:.3f}{std} | {pooled['tau']:.3f} "
                     f"| {pooled['p_value']:.2g} | {int(pooled['n'])} |")
    return "\n".join(lines) + "\n"


def write_index(out_markdown, retrieval_md, tables, hierarchy, map_md, figures) -> None:
    """Write ``report/index.md``.

    Parameters
    ----------
    out_markdown : path-like
        The index page.
    retrieval_md, map_md : path-like
        Markdown tables included verbatim (their first heading demoted one level).
    tables : list of path-like
        Parquet tables, linked.
    hierarchy : path-like
        ``hierarchy.parquet``, summarised inline.
    figures : list of path-like
        PNG figures, embedded.
    """
    page_dir = Path(out_markdown).parent
    parts = ["# MNM evaluation report", ""]
    for path in (retrieval_md, map_md):
        text = Path(path).read_text()
        parts += ["#" + text if text.startswith("# ") else text, f"Source: [{Path(path).name}]"
                  f"({_link(path, page_dir)})", ""]
    parts += ["## Hierarchy: Kendall's tau between brain x0 and active components", "",
              "Negative tau: maps with more active components lie nearer the origin "
              "(MNM paper: -0.58 with L_hier, -0.30 without).", "",
              hierarchy_markdown(pd.read_parquet(hierarchy)), ""]
    parts += ["## Tables", ""]
    parts += [f"- [{Path(t).name}]({_link(t, page_dir)})" for t in [*tables, hierarchy]]
    parts += ["", "## Figures", ""]
    for figure in figures:
        name = Path(figure).stem.replace("_", " ")
        parts += [f"### {name}", "", f"![{name}]({_link(figure, page_dir)})", ""]
    with atomic_path(out_markdown) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
