"""Training throughput of the torch models and an estimate of the whole training stage.

1. Paper shapes (20,000 articles x 4,096-d Mistral text, 512 DiFuMo components, batch 4,096):
   samples/s of full training steps (forward + backward + AdamW) for MNM and NeuroConText, on
   CPU and on the GPU when one is present; the first step is a warm-up and is not timed.
   From it, the time of the paper's training (10 folds x 200 epochs per model).
2. Default config (embedded corpus, ~320 articles, MiniLM 384-d, AICHA 384 components):
   one real fold job per model through :func:`mnm.train.train_torch_model` / RidgeCV, timed,
   times the number of jobs (sections x (folds + "all")).

Synthetic data throughout (only shapes matter). Run: ``python benchmarks/bench_train.py``
(``--steps``, ``--devices cpu cuda``, ``--skip-paper``, ``--skip-default``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from mnm.models.regression import fit_ridge
from mnm.train import TORCH_MODELS, build_torch_model, model_params, split_params, train_torch_model

REPO = Path(__file__).resolve().parents[1]


def synthetic_pairs(n: int, text_dim: int, brain_dim: int, seed: int = 0):
    """Random text features, brain coefficients and active-component counts."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, text_dim)).astype(np.float32)
    brain = rng.normal(size=(n, brain_dim)).astype(np.float32)
    return text, brain, (brain > 1.0).sum(axis=1).astype(np.float32)


def step_throughput(model_name: str, params: dict, device: str, n: int, text_dim: int, brain_dim: int,
                    batch_size: int, steps: int) -> float:  # fmt: skip
    """Samples per second of full training steps at the given shapes (first step untimed)."""
    torch.manual_seed(0)
    constructor, training = split_params(model_name, params)
    model = build_torch_model(model_name, text_dim, brain_dim, **constructor).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=training["lr"], weight_decay=training["weight_decay"])
    text, brain, n_active = (torch.as_tensor(a) for a in synthetic_pairs(min(n, batch_size), text_dim, brain_dim))
    text, brain, n_active = text.to(device), brain.to(device), n_active.to(device)

    def step():
        loss = model.loss(model.encode_text(text), model.encode_brain(brain), n_active)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up: allocations, kernel selection
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(text) / (time.perf_counter() - start)


def default_job_seconds(model_name: str, params: dict, n: int, text_dim: int, brain_dim: int) -> float:
    """Wall time of one default-config fold job's training (fit + per-epoch validation)."""
    text, brain, n_active = synthetic_pairs(n, text_dim, brain_dim)
    n_fit = int(0.8 * 0.9 * n)
    n_val = int(0.8 * n) - n_fit
    start = time.perf_counter()
    if model_name in TORCH_MODELS:
        torch.manual_seed(0)
        constructor, training = split_params(model_name, params)
        training.setdefault("batch_size", 128)
        model = build_torch_model(model_name, text_dim, brain_dim, **constructor)
        train_torch_model(model, text[:n_fit], brain[:n_fit], n_active[:n_fit], text[n_fit : n_fit + n_val],
                          brain[n_fit : n_fit + n_val], progress=False, **training)  # fmt: skip
    else:
        fit_ridge(text[:n_fit], brain[:n_fit], params.get("alphas", [1.0]))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--skip-default", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    models_config = config["models"]

    if not args.skip_paper:
        n, text_dim, brain_dim, batch, epochs, folds = 20_000, 4096, 512, 4096, 200, 10
        print(f"# paper shapes: n={n}, text {text_dim}, brain {brain_dim}, batch {batch}")
        for device in args.devices:
            if device == "cuda" and not torch.cuda.is_available():
                print("cuda: not available, skipped")
                continue
            for name in ("mnm", "neurocontext"):
                params = {**model_params(models_config, name), "latent_dim": 512}
                rate = step_throughput(name, params, device, n, text_dim, brain_dim, batch, args.steps)
                hours = folds * epochs * n * 0.72 / rate / 3600  # 72% of articles are fitted per fold
                print(f"{device:5s} {name:13s} {rate:10.0f} samples/s  -> paper training "
                      f"({folds} folds x {epochs} epochs) ~ {hours:.2f} h per model")  # fmt: skip

    if not args.skip_default:
        n, text_dim, brain_dim = 320, 384, 384
        n_jobs = len(models_config["sections"]) * (config["folds"]["n_folds"] + 1)
        print(f"# default config: n={n}, text {text_dim}, brain {brain_dim}, {n_jobs} jobs per model, 1 thread")
        torch.set_num_threads(1)
        total = 0.0
        for name in models_config["names"]:
            seconds = default_job_seconds(name, model_params(models_config, name), n, text_dim, brain_dim)
            total += seconds * n_jobs
            print(f"{name:13s} {seconds:7.2f} s per job  x {n_jobs} = {seconds * n_jobs:7.1f} s")
        print(f"whole default training stage ~ {total:.0f} s of CPU time on one core")


if __name__ == "__main__":
    main()
