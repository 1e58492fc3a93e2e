"""Evaluation report: retrieval tables, hierarchy analysis, map prediction, figures, index.

Submodules
----------
retrieval
    Per-fold metrics from test embeddings and the Table-1 shaped aggregate.
hierarchy
    Kendall's tau between brain-embedding time components and active components; Poincare disk.
maps
    Multi-level map prediction from text (parcel route and decoder route) and its Dice scores.
figures
    Matplotlib (Agg) figures.
index
    The Markdown index page linking every table and figure.
"""
