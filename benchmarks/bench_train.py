"""Training speed of the shared torch recipe, at the embedded and the paper's shapes.

1. Embedded shapes (config.yaml: ~256 training articles, MiniLM 384-d, AICHA 384 components,
   the recipe of ``models.training``): one fold of each torch model through
   :func:`mnm.training.fit.fit_model` (the same code as a Snakemake job), timed: optimiser
   steps per second, epochs run (early stopping), wall time per fold; then the training
   stage of the default run (every job: models x sections x (folds x repeats + fold all),
   plus the trade-off sweep), in CPU seconds.
2. Paper shapes (20,000 articles x 4,096-d Mistral text -> 512-d latent, 512 DiFuMo
   components, batch 4,096, 200 epochs, config/paper.yaml): steps per second of full training
   steps (forward + backward + AdamW + clamps) for MNM and NeuroConText, and the time of one
   fold (200 epochs x 5 steps) and of the paper's 10 folds, on the CPU and on CUDA when present.

Synthetic data with a planted text -> brain relation (only shapes and the number of epochs
matter). Run: ``python benchmarks/bench_train.py`` (``--skip-paper``, ``--skip-embedded``,
``--devices cpu cuda``, ``--threads``, ``--steps``).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def synthetic_inputs(n: int, text_dim: int, brain_dim: int, seed: int = 0):
    """FoldInputs with brain = text @ W + noise (so early stopping sees real learning)."""
    from mnm.training.data import FoldInputs

    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, text_dim)).astype(np.float32)
    brain = (text @ rng.normal(size=(text_dim, brain_dim)) / math.sqrt(text_dim)
             + 0.5 * rng.normal(size=(n, brain_dim))).astype(np.float32)
    ids = np.array([f"a{i:05d}" for i in range(n)], dtype=object)
    return FoldInputs(ids, text, brain, (brain > 1.0).sum(axis=1).astype(np.float32),
                      {0: np.arange(n) % 5})


def embedded_fold(name: str, models_config: dict, validation_fraction: float) -> dict:
    """Train one fold of ``name`` like a pipeline job; return steps/s, epochs and wall time."""
    from mnm.train import model_params, recipe_of
    from mnm.training.data import split_fold
    from mnm.training.fit import fit_model

    data = synthetic_inputs(320, 384, 384)
    split = split_fold(data.ids, data.folds[0], 0, validation_fraction, 0)
    recipe = recipe_of(models_config, name)
    start = time.perf_counter()
    _, history, _ = fit_model(name, data, split, model_params(models_config, name), recipe, with_decoder=False)
    seconds = time.perf_counter() - start
    steps = int(history["step"].max())
    return {"seconds": seconds, "steps": steps, "epochs": int(history["epoch"].max()), "steps_per_s": steps / seconds}


def paper_steps_per_second(name: str, models_config: dict, device: str, steps: int) -> float:
    """Full training steps per second at the paper's shapes (first step untimed)."""
    from mnm.train import model_params, recipe_of
    from mnm.trained import build_torch_module
    from mnm.training.loop import make_optimizer

    params = {**model_params(models_config, name), "latent_dim": 512}
    params.pop("training", None)
    recipe = recipe_of(models_config, name)
    torch.manual_seed(0)
    model = build_torch_module(name, 4096, 512, **params).to(device).train()
    optimizer = make_optimizer(model, recipe.weight_decay, lr=1e-4)
    data = synthetic_inputs(4096, 4096, 512)
    text, brain, n_active = (torch.as_tensor(a, device=device) for a in (data.text, data.brain, data.n_active))
    clamp = getattr(model, "clamp_parameters", lambda: None)

    def step():
        loss = model.loss(model.encode_text(text), model.encode_brain(brain), n_active)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clamp()
        if device == "cuda":
            torch.cuda.synchronize()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def default_run_jobs(config: dict) -> dict:
    """Trainings per model in the default run: sections x (folds x repeats + fold all)."""
    from mnm.config import validate_config

    config = validate_config(config)
    folds, repeats = config["folds"]["n_folds"], config["folds"]["n_repeats"]
    sections = len(config["models"]["sections"])
    per_model = sections * (folds * repeats + 1)
    tradeoff = config["models"]["tradeoff"]
    return {"per_model": per_model, "tradeoff": len(tradeoff["lambda_hier"]) * len(tradeoff["radius_heads"]) * folds,
            "config": config}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps at the paper's shapes")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads at the paper's shapes")
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--skip-embedded", action="store_true")
    args = parser.parse_args()
    jobs = default_run_jobs(yaml.safe_load((REPO / "config.yaml").read_text()))
    config = jobs["config"]
    models_config = config["models"]

    if not args.skip_embedded:
        torch.set_num_threads(1)  # as the pipeline's training jobs
        print(f"# embedded shapes (320 articles, 384 -> {models_config['mnm']['latent_dim']}, "
              f"batch {models_config['training']['batch_size']}), 1 thread, one fold each")
        from mnm.registry import TORCH_MODELS

        total = 0.0
        for name in [m for m in models_config["names"] if m in TORCH_MODELS]:
            fold = embedded_fold(name, models_config, config["folds"]["validation_fraction"])
            count = jobs["per_model"] + (jobs["tradeoff"] if name == "mnm" else 0)
            total += fold["seconds"] * count
            print(f"{name:13s} {fold['steps_per_s']:7.1f} steps/s, {fold['epochs']:3d} epochs, "
                  f"{fold['seconds']:5.2f} s per fold  x {count} trainings = {fold['seconds'] * count:6.1f} s")
        print(f"torch trainings of the default run: ~{total:.0f} s of CPU time, before job start-up")

    if not args.skip_paper:
        torch.set_num_threads(args.threads)
        print(f"# paper shapes: 20,000 x 4,096 -> 512, 512 components, batch 4,096, {args.threads} threads")
        for device in args.devices:
            if device == "cuda" and not torch.cuda.is_available():
                print("cuda: not available here, skipped")
                continue
            for name in ("mnm", "neurocontext"):
                rate = paper_steps_per_second(name, models_config, device, args.steps)
                fold_hours = 200 * 5 / rate / 3600  # 200 epochs x 5 steps of 4,096 (16,000 fit articles)
                print(f"{device:5s} {name:13s} {rate:7.3f} steps/s  -> one fold (200 epochs) {fold_hours:6.2f} h, "
                      f"10 folds {10 * fold_hours:6.1f} h")


if __name__ == "__main__":
    main()
