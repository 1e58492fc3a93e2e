"""NeuroLIP token attention vs this pipeline's own text -> brain prediction for the same word.

NeuroLIP reads its attention maps against meta-analytic maps. Here the meta-analytic map of a
word (e.g. ``autism``) is the decoder map of the trained MNM run (:func:`mnm.query.query_text`,
used read-only through the query module's public functions). Its mean within each ROI of the
NeuroLIP atlas is correlated (Pearson and Spearman, across ROIs) with the word's attention
map. Without a finished MNM run the comparison is skipped and the reason recorded.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from mnm.neurolip.rois import RoiAtlas

__all__ = ["COMPARE_COLUMNS", "compare_with_mnm"]

logger = logging.getLogger(__name__)

COMPARE_COLUMNS = ["word", "status", "reason", "pearson", "spearman", "n_regions"]


def _skipped(words, reason: str) -> pd.DataFrame:
    logger.info("MNM comparison skipped: %s", reason)
    return pd.DataFrame({"word": list(words), "status": "skipped", "reason": reason, "pearson": np.nan,
                         "spearman": np.nan, "n_regions": 0})[COMPARE_COLUMNS]


def _correlate(word: str, attention: np.ndarray, mnm_regions: np.ndarray) -> dict:
    from scipy.stats import pearsonr, spearmanr

    keep = np.isfinite(mnm_regions) & np.isfinite(attention)
    if keep.sum() < 3 or np.ptp(mnm_regions[keep]) == 0 or np.ptp(attention[keep]) == 0:
        return {"word": word, "status": "skipped", "reason": "fewer than 3 ROIs with varying values",
                "pearson": np.nan, "spearman": np.nan, "n_regions": int(keep.sum())}
    return {"word": word, "status": "compared", "reason": "",
            "pearson": float(pearsonr(attention[keep], mnm_regions[keep])[0]),
            "spearman": float(spearmanr(attention[keep], mnm_regions[keep])[0]), "n_regions": int(keep.sum())}


def compare_with_mnm(attention_by_word: dict, atlas: RoiAtlas | None, config_path, model: str = "mnm") -> pd.DataFrame:
    """Correlate each word's attention with MNM's predicted map for that word.

    Parameters
    ----------
    attention_by_word : dict
        ``{word: attention over ROIs}`` (length R each).
    atlas : RoiAtlas or None
        The NeuroLIP ROI atlas (None: nothing to compare on, skipped).
    config_path : path-like
        Config file of the MNM run.
    model : str
        Model of that run whose ``fold=all`` checkpoint is queried.

    Returns
    -------
    pandas.DataFrame
        :data:`COMPARE_COLUMNS`, one row per word.
    """
    from mnm.query import QueryError, open_run, query_text

    words = list(attention_by_word)
    if not words:
        return _skipped([], "no word to compare")
    if atlas is None:
        return _skipped(words, "no ROI atlas image for this dataset (set neurolip.atlas_image)")
    try:
        run = open_run(config_path, model=model)
    except QueryError as exc:
        return _skipped(words, f"no trained MNM run: {exc}".splitlines()[0])
    rows = []
    for word in words:
        _, maps = query_text(run, word, top_k=1)
        # the decoder map of atlas models, the model's own map of voxel-map models (Text2Brain)
        brain_map = maps.get("decoder", maps.get("voxel_map"))
        if brain_map is None:
            rows.append({"word": word, "status": "skipped", "reason": f"model {model!r} gives no text -> brain map",
                         "pearson": np.nan, "spearman": np.nan, "n_regions": 0})
            continue
        rows.append(_correlate(word, np.asarray(attention_by_word[word], float), atlas.region_means(brain_map)))
    return pd.DataFrame(rows)[COMPARE_COLUMNS]
