"""Issue 11's geometry targets, recomputed from MNM's test_embeddings.parquet files alone.

For every (section, repeat, fold) of a finished run: the coefficient of variation of the brain
and text radii (hyperbolic distance to the origin, asinh(sqrt(c) |x_space|) / sqrt(c)), the
share of text queries whose top-10 under the model's angle score differs from the cosine
top-10 of the same space components, and Kendall's tau between brain radius and the number of
active parcels. Independent of mnm.report (only the score matrix comes from mnm.scoring).

Run from a project folder after ``snakemake --cores all``:
``python benchmarks/geometry_targets.py [--model mnm] [--atlas aicha] [--encoder minilm]``.
"""

from __future__ import annotations

import argparse
import glob

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from mnm.scoring import read_embeddings, score_matrix


def radius(space: np.ndarray, curvature: float) -> np.ndarray:
    """Distance to the hyperboloid's origin of points given by their space components."""
    return np.arcsinh(np.sqrt(curvature) * np.linalg.norm(space, axis=1)) / np.sqrt(curvature)


def one_test_set(path: str) -> dict:
    _, text, brain, meta = read_embeddings(path)
    scores = score_matrix(text_emb=text, brain_emb=brain, **meta)
    unit_text = text / np.linalg.norm(text, axis=1, keepdims=True)
    unit_brain = brain / np.linalg.norm(brain, axis=1, keepdims=True)
    top_angle = np.argsort(-scores, axis=1)[:, :10]
    top_cosine = np.argsort(-(unit_text @ unit_brain.T), axis=1)[:, :10]
    r_brain, r_text = radius(brain, meta["curvature"]), radius(text, meta["curvature"])
    return {"cv_brain": r_brain.std() / r_brain.mean(), "cv_text": r_text.std() / r_text.mean(),
            "top10_differs": np.mean([set(a) != set(c) for a, c in zip(top_angle, top_cosine)]),
            "tau": kendalltau(r_brain, meta["n_active"]).statistic}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--model", default="mnm")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--atlas", default="aicha")
    args = parser.parse_args()
    pattern = f"{args.results}/models/{args.model}/{args.encoder}/*/{args.atlas}/repeat-*/fold-*/test_embeddings.parquet"
    rows = [{"section": path.split("/")[-5], **one_test_set(path)} for path in sorted(glob.glob(pattern))]
    if not rows:
        raise SystemExit(f"no file matches {pattern}")
    table = pd.DataFrame(rows)
    print(table.groupby("section").agg(["mean", "min", "max"]).round(3).T.to_string())
    print(f"test sets with brain radius CV >= 0.05: {(table['cv_brain'] >= 0.05).sum()} of {len(table)}")


if __name__ == "__main__":
    main()
