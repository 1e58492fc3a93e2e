"""Cost of the Text2Brain baseline on the CPU: its KDE maps, one training fold, memory.

1. KDE maps (rule ``kde_maps``, :func:`mnm.kde_maps.compute_kde_maps`): the 320 studies of
   NiMARE's bundled studyset, then a synthetic corpus ``--kde-scale`` times larger (the real
   articles' peak sets, re-used under new ids) to show that time grows linearly and memory
   does not; extrapolated to 20,000 articles. The atlas (snapping grid and support of the KDE)
   is the MNI brain split into hemispheres on the 2 mm analysis grid, unless ``--atlas`` gives
   a run's ``atlas.nii.gz``.
2. Training, embedded size: one fold like a pipeline job (320 articles, 384-d text, 29,398
   voxels, the config's ``models.text2brain`` and its training overrides, 1 thread), on
   synthetic texts that decide the maps (a planted relation, so early stopping sees learning)
   for ``--epochs`` epochs: seconds per epoch, then a fold at the recipe's ``max_epochs`` (the
   bound) and the default run's count of trainings (sections x (folds x repeats + fold all)).
3. Training at 20,000 x 384 (extrapolated): ``--steps`` timed optimiser steps at the recipe's
   batch size and one validation pass, scaled to a fold of 20,000 articles (80 % fit after
   the 5-fold split, 10 % of that validation).
4. Memory: peak resident memory of this process after each part (``ru_maxrss``), and the size
   of the 20,000-article inputs (text + maps, float32) a job holds.

Run: ``python benchmarks/bench_text2brain.py`` (``--skip-kde``, ``--skip-train``,
``--epochs``, ``--steps``, ``--kde-scale``, ``--atlas``, ``--up-blocks``). Timings on a shared machine are
indicative; re-run on a quiet one.
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
N_PAPER = 20000


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hemisphere_atlas(path: Path) -> None:
    """The 2 mm MNI brain split into left and right hemispheres (a cheap 2-map atlas)."""
    import nibabel as nib

    from mnm.atlas import analysis_mask

    mask_img = analysis_mask(2)
    brain = np.asarray(mask_img.dataobj) > 0
    x_mm = mask_img.affine[0, 0] * np.arange(brain.shape[0]) + mask_img.affine[0, 3]
    left = brain & (x_mm < 0)[:, None, None]
    nib.save(nib.Nifti1Image(np.stack([left, brain & ~left], -1).astype(np.float32), mask_img.affine), path)


def corpus(folder: Path, scale: int) -> tuple[Path, Path]:
    """peaks.parquet / articles.parquet of the bundled studyset, its articles repeated ``scale`` times."""
    from mnm.corpus import bundled_studyset_dir
    from mnm.io import write_parquet

    peaks = pd.read_parquet(bundled_studyset_dir() / "coordinates.parquet", columns=["study_id", "x", "y", "z"])
    peaks = peaks.rename(columns={"study_id": "article_id"}).assign(article_id=lambda t: t["article_id"].astype(str))
    copies = pd.concat([peaks.assign(article_id=peaks["article_id"] + f"_{k}") for k in range(scale)])
    ids = copies["article_id"].drop_duplicates()
    write_parquet(copies, folder / "peaks.parquet")
    write_parquet(pd.DataFrame({"article_id": ids}), folder / "articles.parquet")
    return folder / "peaks.parquet", folder / "articles.parquet"


def bench_kde(atlas: Path | None, scale: int) -> None:
    from mnm.kde_maps import compute_kde_maps

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if atlas is None:
            atlas = tmp / "atlas.nii.gz"
            hemisphere_atlas(atlas)
        per_article = []
        for factor in (1, scale):
            peaks, articles = corpus(tmp, factor)
            rss_before = peak_rss_mb()
            start = time.perf_counter()
            n = compute_kde_maps(atlas, peaks, articles, tmp / "maps.parquet", tmp / "mask.nii.gz")
            seconds = time.perf_counter() - start
            per_article.append(seconds / n)
            size = (tmp / "maps.parquet").stat().st_size / 1e6
            print(f"kde_maps {n:6d} articles: {seconds:6.1f} s (set-up included; {1e3 * seconds / n:.1f} ms "
                  f"per article), {size:7.1f} MB Parquet, peak RSS {peak_rss_mb():6.0f} MB "
                  f"(before {rss_before:.0f} MB)")
        marginal = per_article[-1]
        print(f"-> 20,000 articles: ~{N_PAPER * marginal / 60:.1f} min, ~{N_PAPER * 29398 * 4 / 1e9:.2f} GB "
              f"of maps (float32), memory flat (chunks of 512 articles, ~60 MB)")


def planted_inputs(n: int, text_dim: int, mask: np.ndarray, seed: int = 0):
    """FoldInputs whose maps are Gaussian blobs placed by a linear function of the text."""
    from mnm.training.data import FoldInputs

    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, text_dim)).astype(np.float32)
    voxels = np.argwhere(mask).astype(np.float32)
    low, high = voxels.min(0), voxels.max(0)
    centres = low + (high - low) / (1 + np.exp(-text[:, :3] * 1.5))  # inside the mask's box
    maps = np.empty((n, len(voxels)), dtype=np.float32)
    for start in range(0, n, 256):
        block = centres[start:start + 256]
        maps[start:start + 256] = np.exp(-((voxels[None] - block[:, None]) ** 2).sum(-1) / (2 * 2.5**2))
    ids = np.array([f"a{i:05d}" for i in range(n)], dtype=object)
    return FoldInputs(ids, text, maps, np.ones(n, np.float32), {0: np.arange(n) % 5})


def bench_train(models_config: dict, config: dict, epochs: int, steps: int) -> None:
    import nibabel as nib

    from mnm.kde_maps import COARSE_AFFINE, coarse_mask
    from mnm.train import model_params, recipe_of
    from mnm.training.data import split_fold
    from mnm.training.fit import fit_model
    from mnm.training.loop import encode, make_optimizer

    torch.set_num_threads(1)  # as the pipeline's training jobs
    mask_img = coarse_mask()
    mask = np.asarray(mask_img.dataobj) > 0
    params = model_params(models_config, "text2brain")
    recipe = recipe_of(models_config, "text2brain")
    print(f"# training, 1 thread: up_blocks {params['up_blocks']}, fc_channels {params['fc_channels']}, decoder_filters "
          f"{params['decoder_filters']}, batch {recipe.batch_size}, lr {recipe.lr}, max_epochs "
          f"{recipe.max_epochs}, patience {recipe.patience}")

    data = planted_inputs(320, 384, mask)
    data.brain_mask = nib.Nifti1Image(mask.astype(np.uint8), COARSE_AFFINE)
    split = split_fold(data.ids, data.folds[0], 0, config["folds"]["validation_fraction"], 0)
    short = type(recipe)(**{**recipe.as_dict(), "max_epochs": epochs, "patience": None})
    start = time.perf_counter()
    model, history, _ = fit_model("text2brain", data, split, params, short)
    per_epoch = (time.perf_counter() - start) / epochs
    folds, repeats = config["folds"]["n_folds"], config["folds"]["n_repeats"]
    trainings = len(config["models"]["sections"]) * (folds * repeats + 1)
    print(f"embedded (320 articles, {len(split.fit)} fit): {per_epoch:.1f} s per epoch "
          f"(train loss {history['train_loss'].iloc[1]:.4f} -> {history['train_loss'].iloc[-1]:.4f}); a fold "
          f"at max_epochs {recipe.max_epochs}: {per_epoch * recipe.max_epochs / 60:.1f} min; the default "
          f"run's {trainings} trainings: <= {per_epoch * recipe.max_epochs * trainings / 3600:.1f} h of CPU; "
          f"peak RSS {peak_rss_mb():.0f} MB")

    # 20,000 x 384: time optimiser steps and inference on a subset, then scale
    module = model.module.train()
    optimizer = make_optimizer(module, recipe.weight_decay, recipe.lr)
    batch = planted_inputs(recipe.batch_size, 384, mask, seed=1)
    x, y = torch.as_tensor(batch.text), torch.as_tensor(batch.brain)

    def step():
        loss = module.loss(module.encode_text(x), module.encode_brain(y))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    step_s = (time.perf_counter() - start) / steps
    module.eval()
    start = time.perf_counter()
    encode(module.encode_text, batch.text, "cpu")
    infer_s = (time.perf_counter() - start) / recipe.batch_size
    n_fit = int(N_PAPER * 0.8 * 0.9)
    n_val = int(N_PAPER * 0.8) - n_fit
    epoch_s = math.ceil(n_fit / recipe.batch_size) * step_s + n_val * infer_s
    print(f"20,000 x 384 (extrapolated from {steps} steps of {recipe.batch_size}): {step_s:.2f} s per step, "
          f"{n_fit} fit + {n_val} validation articles -> {epoch_s / 60:.1f} min per epoch, "
          f"{epoch_s * recipe.max_epochs / 3600:.1f} h per fold at max_epochs {recipe.max_epochs} (CPU, 1 thread)")
    maps_gb = N_PAPER * int(mask.sum()) * 4 / 1e9
    print(f"memory at 20,000: maps {maps_gb:.2f} GB (float32) + the fit and validation rows the job "
          f"indexes out of them ({maps_gb * 0.8:.2f} GB) + one batch's activations; peak RSS here "
          f"{peak_rss_mb():.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs at the embedded size")
    parser.add_argument("--steps", type=int, default=3, help="timed steps for the 20,000-article extrapolation")
    parser.add_argument("--kde-scale", type=int, default=10, help="synthetic corpus = this many times 320")
    parser.add_argument("--atlas", type=Path, default=None, help="atlas.nii.gz of a run (default: hemispheres)")
    parser.add_argument("--up-blocks", type=int, choices=[1, 2, 3], default=None,
                        help="override models.text2brain.up_blocks (3 = Text2Brain's decoder)")
    parser.add_argument("--skip-kde", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    from mnm.config import validate_config

    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    if not args.skip_kde:
        bench_kde(args.atlas, args.kde_scale)
    if args.up_blocks is not None:
        config["models"]["text2brain"]["up_blocks"] = args.up_blocks
    if not args.skip_train:
        bench_train(config["models"], config, args.epochs, args.steps)


if __name__ == "__main__":
    main()
