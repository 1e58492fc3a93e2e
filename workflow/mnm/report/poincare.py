"""Poincare-disk figure of the hyperbolic models: parcels at two atlas levels and all articles."""

from __future__ import annotations

import numpy as np

from mnm.io import read_parquet
from mnm.report.maps import component_label_volume, informative_levels, parcel_coefficients

__all__ = ["write_poincare_figure"]


def write_poincare_figure(model_paths: dict, atlas_dir, coefficients, out_png, fwhm_mm: float = 9.0,
                          zscore: bool = False, levels=None) -> None:
    """Poincare disk of hyperbolic models: parcels at two atlas levels and all articles.

    Parameters
    ----------
    model_paths : dict
        ``{label: model.safetensors}`` of fold-all hyperbolic models, e.g. MNM with and without
        L_hier; one figure row each.
    atlas_dir : path-like
        The atlas stage's folder.
    coefficients : path-like
        ``coefficients.parquet``: every article's brain vector, drawn coloured by its number of
        active components (its breadth).
    levels : list of str, optional
        Two level columns; by default the two coarsest with at least 3 parcels (AICHA: gyral
        structures and regions; DiFuMo: Yeo 7 and Yeo 17 networks).

    Points are placed by :func:`mnm.report.hierarchy.poincare_disk_coordinates`: exact distance
    to the origin, 2-D direction by PCA of the tangent vectors.
    """
    from mnm.atlas import read_atlas
    from mnm.brain import BrainProjector
    from mnm.io import read_matrix
    from mnm.report import figures
    from mnm.report.hierarchy import poincare_disk_coordinates
    from mnm.trained import load_trained

    maps_img, components = read_atlas(atlas_dir)
    levels = list(levels or informative_levels(components)[:2])
    projector = BrainProjector(maps_img, fwhm_mm=fwhm_mm).fit(lookup_table=False)
    labels = component_label_volume(maps_img, projector)
    parcels = {level: parcel_coefficients(maps_img, components, level, projector, zscore, labels)
               for level in levels}
    _, article_coefs = read_matrix(coefficients, "coefficients")
    n_active = read_parquet(coefficients, columns=["n_active"])["n_active"].to_numpy()
    rows = {}
    for label, path in model_paths.items():
        trained = load_trained(path)
        c = trained.curvature
        panels = {}
        for level, (names, coefs) in parcels.items():
            coords = poincare_disk_coordinates(trained.embed_brain(coefs), c)
            panels[f"{level} parcels ({len(names)})"] = (coords, names, np.linalg.norm(coords, axis=1), "disk radius")
        coords = poincare_disk_coordinates(trained.embed_brain(article_coefs), c)
        panels[f"articles ({len(coords)})"] = (coords, None, n_active, "active parcels")
        rows[label] = panels
    figures.poincare_disk(rows, out_png, title="Poincare disk (fold-all models; radius = exact distance to the origin)")
