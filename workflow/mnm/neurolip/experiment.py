"""The NeuroLIP branch in one process on a GENERATED fixture (tests and benchmarks).

The Snakemake branch runs the same functions as separate jobs; this module chains them
(fixture -> data stage -> text stage -> training jobs) for code that needs a small, complete
run without Snakemake, and measures the planted sex gap of a run's predictions.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mnm.neurolip.data import build_dataset
from mnm.neurolip.fixture import FixtureSpec, fixture_atlas_paths, write_fixture
from mnm.neurolip.fold import run_fold
from mnm.neurolip.texts import build_texts
from mnm.neurolip.train import TrainSettings

__all__ = ["run_generated", "pooled_predictions", "score_sex_gap"]


def run_generated(root, spec: FixtureSpec, encoder, templates, prompt_template: str, *, variants, folds,
                  n_folds: int, settings: TrainSettings, loss: dict, sensitive=("sex", "site")) -> Path:
    """Write a GENERATED fixture under ``root`` and train ``variants`` on ``folds`` of it.

    Returns ``root``; the layout under it is the pipeline's: ``generated_fixture/``, ``data/``
    (data and text stages) and ``<variant>/fold-<k>/`` (:func:`mnm.neurolip.fold.run_fold`).
    """
    root = Path(root)
    fixture, data = root / "generated_fixture", root / "data"
    write_fixture(fixture, spec)
    atlas, names = fixture_atlas_paths(fixture)
    build_dataset("generated", fixture, data, abide={}, adhd={}, atlas_image=atlas, atlas_names=names,
                  n_folds=n_folds)
    build_texts(data / "subjects.parquet", "generated", list(templates), prompt_template, encoder,
                data / "texts.parquet", data / "subject_texts.parquet", data / "tokens.parquet")
    for variant in variants:
        for fold in folds:
            run_fold(data, variant, fold, root / variant / f"fold-{fold}", settings=settings, loss=loss,
                     sensitive=list(sensitive))
    return root


def pooled_predictions(root, variant: str, folds, readout: str = "zero_shot") -> pd.DataFrame:
    """Test-subject predictions of ``variant`` pooled over ``folds`` for one readout."""
    table = pd.concat([pd.read_parquet(Path(root) / variant / f"fold-{f}" / "predictions.parquet") for f in folds])
    return table[table["readout"] == readout]


def score_sex_gap(predictions: pd.DataFrame) -> float:
    """Largest male-female difference of the mean patient probability within a diagnosis group.

    The threshold-free analogue of the equalised odds gap: 0 for a model whose scores do not
    depend on sex once the diagnosis is known.
    """
    means = predictions.groupby(["diagnosis", "sex"])["probability"].mean().unstack("sex")
    return float((means["male"] - means["female"]).abs().max())
