"""Brain features: fast peak-lookup projection vs the standard KDE map + NiftiMapsMasker.

Run from the repository root (about 5 minutes on 2 cores, ~6 GB RAM):

    python benchmarks/bench_brain.py

Prints, on the 2 mm MNI grid:

* standard path time per study: NeuroQuery's KDE map (``neuroquery.img_utils.
  gaussian_coord_smoothing``) for each study, then one ``NiftiMapsMasker.transform`` of the
  stacked maps (batched, the standard path's best case);
* fast path time for 20,000 synthetic studies (real peaks of the embedded corpus, jittered
  by N(0, 4 mm) and resampled with replacement), and the per-study speed ratio;
* the fast path's maximal relative error against the dense reference
  (:func:`mnm.brain.reference_coefficients`) on real studies;
* table build time and peak memory (tracemalloc, allocations during ``fit`` only) for the
  default AICHA atlas (384 maps) and for 512 maps. DiFuMo-512 needs network, so the 512-map
  figure uses 512 synthetic smooth positive maps (Gaussian blobs of 8-20 mm width, non-zero
  over the whole brain, hence a dense ``D^T D`` like DiFuMo's) on the same grid.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc

import nibabel as nib
import numpy as np
import pandas as pd

os.environ.setdefault("TQDM_DISABLE", "1")

from mnm.atlas import analysis_mask, load_atlas  # noqa: E402
from mnm.brain import BrainProjector, reference_coefficients  # noqa: E402

FWHM = 9.0


def embedded_peaks() -> pd.DataFrame:
    """Peaks of NiMARE's bundled studyset (the pipeline's embedded default corpus)."""
    import nimare

    path = os.path.join(
        os.path.dirname(nimare.__file__),
        "resources", "nback_vs_flanker_studyset_2026-07", "coordinates.parquet",
    )
    table = pd.read_parquet(path, columns=["study_id", "x", "y", "z"])
    return table.rename(columns={"study_id": "article_id"})


def synthetic_corpus(peaks: pd.DataFrame, n_studies: int, seed: int = 0) -> pd.DataFrame:
    """``n_studies`` studies, each a real study's peaks jittered by N(0, 4 mm)."""
    rng = np.random.default_rng(seed)
    groups = [g[["x", "y", "z"]].to_numpy() for _, g in peaks.groupby("article_id")]
    chosen = rng.integers(len(groups), size=n_studies)
    xyz = np.concatenate([groups[i] for i in chosen])
    xyz = xyz + rng.normal(scale=4.0, size=xyz.shape)
    ids = np.repeat([f"s{i}" for i in range(n_studies)], [len(groups[i]) for i in chosen])
    return pd.DataFrame({"article_id": ids, "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})


def synthetic_maps(mask_img, n_maps: int, seed: int = 0) -> nib.Nifti1Image:
    """``n_maps`` smooth positive blobs centred in the brain, masked (DiFuMo stand-in)."""
    rng = np.random.default_rng(seed)
    mask = np.asarray(mask_img.dataobj) > 0
    inside = np.argwhere(mask)
    centres = inside[rng.integers(len(inside), size=n_maps)] * 2.0
    widths = rng.uniform(8.0, 20.0, size=n_maps) / np.sqrt(8 * np.log(2))
    axes = [np.arange(n) * 2.0 for n in mask.shape]
    maps = np.zeros(mask.shape + (n_maps,), dtype=np.float32)
    for j, (centre, width) in enumerate(zip(centres, widths)):
        profiles = [np.exp(-((a - c) ** 2) / (2 * width**2)) for a, c in zip(axes, centre)]
        # Separable blob plus a small floor so that every map covers the whole brain.
        blob = np.einsum("i,j,k->ijk", *profiles) + 1e-3
        maps[..., j] = np.where(mask, blob, 0.0)
    return nib.Nifti1Image(maps, mask_img.affine)


def timed_fit(maps_img):
    """Fit a projector; return it, the seconds taken and the peak traced memory (GB)."""
    tracemalloc.start()
    start = time.perf_counter()
    projector = BrainProjector(maps_img, fwhm_mm=FWHM).fit()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return projector, seconds, peak / 1e9


def standard_path_seconds_per_study(peaks, ids, maps_img, mask_img) -> float:
    """NeuroQuery KDE map per study, then one batched NiftiMapsMasker transform."""
    from neuroquery.img_utils import gaussian_coord_smoothing, get_masker
    from nilearn.image import concat_imgs
    from nilearn.maskers import NiftiMapsMasker

    kde_masker = get_masker(mask_img)
    maps_masker = NiftiMapsMasker(maps_img, mask_img=mask_img).fit()
    start = time.perf_counter()
    images = [
        gaussian_coord_smoothing(
            peaks.loc[peaks["article_id"] == a, ["x", "y", "z"]].to_numpy(), mask_img=kde_masker, fwhm=FWHM
        )
        for a in ids
    ]
    maps_masker.transform(concat_imgs(images))
    return (time.perf_counter() - start) / len(ids)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-studies", type=int, default=20000)
    parser.add_argument("--n-standard", type=int, default=10, help="studies timed on the standard path")
    parser.add_argument("--n-reference", type=int, default=20, help="studies checked against the reference")
    parser.add_argument("--skip-512", action="store_true", help="skip the 512-map table build")
    args = parser.parse_args(argv)

    peaks = embedded_peaks()
    mask_img = analysis_mask(2)
    maps_img, components = load_atlas("aicha", None, 2)
    print(f"atlas: AICHA, {len(components)} maps on grid {maps_img.shape[:3]} (2 mm)")

    projector, build_s, build_gb = timed_fit(maps_img)
    print(f"table build (AICHA, {len(components)} maps): {build_s:.1f} s, peak {build_gb:.2f} GB traced")

    ids, coefficients = projector.transform_peaks(peaks)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(ids), size=args.n_reference, replace=False)
    xyz = [peaks.loc[peaks["article_id"] == ids[i], ["x", "y", "z"]].to_numpy() for i in chosen]
    reference = reference_coefficients(xyz, maps_img, mask_img, FWHM)
    error = np.abs(coefficients[chosen] - reference).max(axis=1) / np.abs(reference).max(axis=1)
    print(f"max relative error vs dense reference ({args.n_reference} real studies): {error.max():.2e}")

    start = time.perf_counter()
    projector.transform_peaks(peaks)
    embedded_s = time.perf_counter() - start
    print(f"fast path, embedded corpus ({len(ids)} studies, {len(peaks)} peaks): {embedded_s * 1e3:.1f} ms")

    corpus = synthetic_corpus(peaks, args.n_studies)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        projector.transform_peaks(corpus)
        timings.append(time.perf_counter() - start)
    fast_s = min(timings)
    print(f"fast path, {args.n_studies} synthetic studies ({len(corpus)} peaks): {fast_s:.3f} s (best of 3)")

    standard_s = standard_path_seconds_per_study(peaks, ids[: args.n_standard], maps_img, mask_img)
    print(f"standard path (NeuroQuery KDE + NiftiMapsMasker): {standard_s:.3f} s per study")
    ratio = standard_s / (fast_s / args.n_studies)
    print(f"speed ratio per study: {ratio:.3g}x")
    del projector

    if not args.skip_512:
        maps_512 = synthetic_maps(mask_img, 512)
        _, build_s, build_gb = timed_fit(maps_512)
        print(f"table build (512 synthetic smooth maps): {build_s:.1f} s, peak {build_gb:.2f} GB traced")
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"process max RSS (inputs included): {rss_gb:.2f} GB")


if __name__ == "__main__":
    main()
