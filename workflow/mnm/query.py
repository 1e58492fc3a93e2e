"""Query a trained model of a finished run: text -> brain maps and articles, map -> articles.

A query opens the run (its validated config tells where every output is), loads the
``fold=all`` model trained on every article, and scores the query against the whole corpus
through the model's own scoring (``-|exterior angle|`` for MNM, cosine for NeuroConText,
correlation for the regressions):

* text -> the articles whose brain maps the model ranks highest for the text, the decoder
  map (predicted atlas coefficients painted back to voxels) and one parcel-route map per
  hierarchy level of the atlas (MNM Fig. 4);
* map -> the map is projected on the run's atlas by the brain stage's own code
  (:meth:`mnm.brain.BrainProjector.transform_img`), embedded by the brain encoder, and the
  articles whose texts the model ranks highest for it.

Voxel-map models (Text2Brain) have no atlas route: a text gives the model's own 4 mm map
(``voxel_map``) and is scored against the articles' 4 mm KDE maps (``kde_4mm/maps.parquet``);
a map is resampled onto the model's grid instead of projected on the atlas.

Outputs are written into a scratch folder next to the destination and moved into place
only once all of them exist, so a failed query writes nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mnm.io import read_matrix, read_parquet

_LOG = logging.getLogger(__name__)

RESULT_COLUMNS = ["rank", "article_id", "score", "title", "pmcid", "pmid", "doi"]


class QueryError(Exception):
    """A query that cannot be answered; the message says why and what to do.

    ``missing_run`` is True when the run (model, atlas, corpus) is missing or unfinished,
    False when the query input itself is bad.
    """

    def __init__(self, message: str, missing_run: bool = False):
        super().__init__(message)
        self.missing_run = missing_run


def _fold_all_model_path(config: dict, model: str, section: str, atlas: str) -> Path:
    return (
        Path(config["results_dir"]) / "models" / model / config["text"]["encoder"] / section
        / atlas / "fold-all" / "model.safetensors"
    )


def load_run_config(config_path: str | os.PathLike = "config.yaml") -> dict:
    """Read and validate a run's config file (defaults filled in).

    Relative ``results_dir`` and ``resources_dir`` are taken relative to the config file's
    folder (where Snakemake ran), not to the current folder.
    """
    from mnm.config import load_schema, validate_config

    path = Path(config_path)
    if not path.is_file():
        raise QueryError(f"{path}: config file not found (run from the project folder or "
                         "pass --config)", missing_run=True)
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    defaults = load_schema()["properties"]
    for key in ("results_dir", "resources_dir"):
        folder = Path(raw.get(key, defaults[key]["default"]))
        raw[key] = str(folder if folder.is_absolute() else (path.parent / folder).resolve())
    return validate_config(raw)


@dataclass
class QueryRun:
    """The parts of a finished run a query needs (loaded lazily)."""

    config: dict
    model_path: Path
    section: str
    device: str = "cpu"
    atlas_name: str = ""

    def __post_init__(self):
        self.atlas_name = self.atlas_name or self.config["brain"]["atlases"][0]

    @property
    def results(self) -> Path:
        return Path(self.config["results_dir"])

    def _need(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise QueryError(f"{path}: {what} missing; the run is unfinished (run "
                             "`snakemake --cores all` first)", missing_run=True)
        return path

    @cached_property
    def trained(self):
        from mnm.checkpoint import CheckpointError
        from mnm.trained import load_trained

        try:
            trained = load_trained(self.model_path, device=self.device)
        except CheckpointError as error:
            raise QueryError(str(error), missing_run=True) from None
        encoder_cfg = trained.metadata.get("encoder_config") or {}
        model_id = str(encoder_cfg.get("model", ""))
        if self.device == "cpu" and model_id and not model_id.startswith("package:"):
            _LOG.warning("embedding the query with %s on the CPU: correct but slow for a "
                         "large model (minutes for Mistral-7B); use --device cuda if you "
                         "have a GPU", model_id)
        return trained

    @cached_property
    def articles(self) -> pd.DataFrame:
        path = self._need(self.results / "corpus" / "articles.parquet", "corpus table")
        return read_parquet(path).set_index("article_id", drop=False)

    @cached_property
    def atlas_dir(self) -> Path:
        return self._need(self.results / "atlas" / self.atlas_name,
                          "atlas stage output")

    @cached_property
    def atlas(self):
        from mnm.atlas import read_atlas

        return read_atlas(self.atlas_dir)

    @cached_property
    def projector(self):
        from mnm.brain import BrainProjector

        maps_img, _ = self.atlas
        return BrainProjector(maps_img, fwhm_mm=self.config["brain"]["fwhm_mm"]).fit(lookup_table=False)

    @cached_property
    def brain_candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """(article ids, brain embeddings as scored) of every article of the run."""
        brain_dir = self.results / "brain" / self.atlas_name
        if self.trained.brain_input == "kde_4mm":  # voxel-map models score KDE maps
            path = self._need(brain_dir / "kde_4mm" / "maps.parquet", "4 mm KDE maps")
            ids, vectors = read_matrix(path, column="kde")
        else:
            path = self._need(brain_dir / "coefficients.parquet", "brain coefficients")
            ids, vectors = read_matrix(path, column="coefficients")
        return ids, np.asarray(self.trained.embed_brain(vectors))

    @cached_property
    def text_candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """(article ids, text embeddings as scored) of every article of the run."""
        if self.trained.name == "tfidf":
            from mnm.text.sections import section_texts

            texts = section_texts(self.articles.reset_index(drop=True), self.section)
            ids = self.articles["article_id"].to_numpy()
            keep = np.array([bool(t and t.strip()) for t in texts])
            return ids[keep], np.asarray(self.trained.embed_text(
                [t for t, k in zip(texts, keep) if k]))
        path = self._need(
            self.results / "text" / self.config["text"]["encoder"] / self.section
            / "embeddings.parquet", "text embeddings",
        )
        ids, vectors = read_matrix(path)
        return ids, np.asarray(self.trained.embed_text(vectors))

    @cached_property
    def parcel_routes(self) -> dict:
        """Per informative hierarchy level: (parcel embeddings, parcel label volume).

        The text-independent half of the parcel-route maps, computed once per run (seconds
        for a whole atlas level), so that a server answering many queries pays it once.
        """
        from mnm.report import maps as map_routes

        if self.trained.brain_input != "coefficients":  # voxel-map models: no parcel route
            return {}
        maps_img, components = self.atlas
        component_labels = map_routes.component_label_volume(maps_img, self.projector)
        routes = {}
        for level in map_routes.informative_levels(components):
            _, coefficients = map_routes.parcel_coefficients(
                maps_img, components, level, projector=self.projector,
                zscore=self.config["brain"]["zscore"], component_labels=component_labels)
            _, component_parcel = map_routes.parcel_assignment(components, level)
            routes[level] = (map_routes.parcel_embeddings(self.trained, coefficients),
                             map_routes.parcel_label_volume(component_labels, component_parcel))
        return routes

    def article_table(self, ids: np.ndarray, scores: np.ndarray, top_k: int) -> pd.DataFrame:
        """Top-``top_k`` articles by score (ties broken by article id, for stable output)."""
        order = np.lexsort((ids.astype(str), -scores))[:top_k]
        meta = self.articles.reindex(ids[order])
        table = pd.DataFrame({
            "rank": np.arange(1, len(order) + 1),
            "article_id": ids[order].astype(str),
            "score": scores[order].astype(float),
            "title": meta["title"].array,
            "pmcid": meta["pmcid"].array,
            "pmid": meta["pmid"].array,
            "doi": meta["doi"].array,
        })
        return table


def open_run(
    config_path: str | os.PathLike = "config.yaml",
    model: str = "mnm",
    section: str | None = None,
    model_path: str | os.PathLike | None = None,
    device: str = "cpu",
    atlas: str | None = None,
) -> QueryRun:
    """Locate the ``fold=all`` model of a run.

    Parameters
    ----------
    config_path : path-like
        The run's config file (its ``results_dir`` says where the outputs are).
    model : str
        Model name (one of the run's ``models.names``).
    section : str, optional
        Text section the model was trained on; default ``abstract`` when trained, else the
        first of ``models.sections``.
    model_path : path-like, optional
        Explicit ``model.safetensors``; overrides ``model`` and ``section`` lookup.
    device : str
        ``cpu`` or ``cuda``.
    atlas : str, optional
        One of the run's ``brain.atlases`` (default the first).
    """
    config = load_run_config(config_path)
    atlas = atlas or config["brain"]["atlases"][0]
    if atlas not in config["brain"]["atlases"]:
        raise QueryError(f"atlas {atlas!r} is not one of this run's brain.atlases {config['brain']['atlases']}")
    explicit_path = model_path is not None
    sections = config["models"]["sections"]
    if section is None:
        section = "abstract" if "abstract" in sections else sections[0]
    if model_path is None:
        if model not in config["models"]["names"]:
            raise QueryError(f"model {model!r} is not trained by this run (models.names: "
                             f"{config['models']['names']})")
        model_path = _fold_all_model_path(config, model, section, atlas)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise QueryError(
            f"{model_path}: trained model not found; the run is missing or unfinished. Run "
            f"`snakemake --cores all {model_path}` first, or pass --model-path",
            missing_run=True,
        )
    run = QueryRun(config=config, model_path=model_path, section=section, device=device, atlas_name=atlas)
    if explicit_path:
        run.section = run.trained.metadata.get("section") or run.section
        run.atlas_name = run.trained.metadata.get("atlas") or run.atlas_name
    return run


# --------------------------------------------------------------------------------------
def query_text(run: QueryRun, text: str, top_k: int = 10) -> tuple[pd.DataFrame, dict]:
    """Articles and predicted maps for a free text.

    Returns
    -------
    table : DataFrame with :data:`RESULT_COLUMNS`, best first.
    maps : dict name -> Nifti1Image (``decoder`` and ``parcels_<level>``; ``voxel_map`` for
        voxel-map models).
    """
    from mnm.report import maps as map_routes

    if not isinstance(text, str) or not text.strip():
        raise QueryError("the query text is empty")
    trained = run.trained
    text_embedding = np.atleast_2d(np.asarray(trained.embed_text([text.strip()])))
    ids, brain_embeddings = run.brain_candidates
    scores = np.asarray(trained.score(text_embedding, brain_embeddings))[0]
    table = run.article_table(ids, scores, top_k)

    maps = {}
    voxel_map = trained.predict_map([text.strip()])
    if voxel_map is not None:  # voxel-map models: their own map (and no parcel route)
        maps["voxel_map"] = voxel_map
    decoder = map_routes.predict_decoder_map(trained, [text.strip()], run.projector)
    if decoder is not None:
        maps["decoder"] = decoder
    maps_img, _ = run.atlas
    for level, (parcel_embedding, label_volume) in run.parcel_routes.items():
        maps[f"parcels_{level}"] = map_routes.predict_parcel_map(
            trained, text_embedding, parcel_embedding, label_volume, maps_img.affine)
    return table, maps


def load_query_map(path: str | os.PathLike):
    """Load a statistical map given on the command line: one 3D volume, finite values."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise QueryError(f"{path}: map file not found")
    try:
        img = nib.load(path)
    except Exception as error:  # nibabel raises several types for unreadable files
        raise QueryError(f"{path}: not a readable NIfTI image ({error})") from error
    if img.ndim == 4 and img.shape[3] == 1:
        img = img.slicer[..., 0]
    if img.ndim != 3:
        raise QueryError(f"{path}: expected one 3D map, got an image of shape {img.shape}; "
                         "pass one volume (e.g. nilearn.image.index_img(img, 0))")
    data = np.asanyarray(img.dataobj)
    if not np.isfinite(data).any() or not np.any(data[np.isfinite(data)]):
        raise QueryError(f"{path}: the map is empty (all zero or non-finite)")
    return img


def query_map(run: QueryRun, map_path: str | os.PathLike, top_k: int = 10) -> pd.DataFrame:
    """Articles whose texts the model ranks highest for a brain map.

    The map is resampled to the atlas grid (with a warning) when its shape or affine differ.
    """
    from mnm.brain import zscore_rows

    img = load_query_map(map_path)
    if run.trained.brain_input == "kde_4mm":  # voxel-map models: the map on the model's grid
        vector = run.trained.brain_vector(img)
        if not np.any(vector):
            raise QueryError(f"{map_path}: the map has no signal inside the model's brain mask; is "
                             "it in MNI space?")
        return _rank_texts(run, vector[None, :], top_k)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coefficients = run.projector.transform_img(img)
    for warning in caught:
        _LOG.warning("%s: %s", map_path, warning.message)
    coefficients = np.atleast_2d(np.nan_to_num(coefficients))
    if not np.any(np.abs(coefficients) > 0):
        raise QueryError(f"{map_path}: the map has no signal inside the brain atlas (no overlap "
                         "with the analysis grid's brain mask); is it in MNI space?")
    if run.config["brain"]["zscore"]:
        coefficients = zscore_rows(coefficients)
    return _rank_texts(run, coefficients, top_k)


def _rank_texts(run: QueryRun, brain_input: np.ndarray, top_k: int) -> pd.DataFrame:
    """Articles ranked by the model's score of their text against one brain input row."""
    brain_embedding = np.asarray(run.trained.embed_brain(brain_input))
    ids, text_embeddings = run.text_candidates
    scores = np.asarray(run.trained.score(text_embeddings, brain_embedding))[:, 0]
    return run.article_table(ids, scores, top_k)


# --------------------------------------------------------------------------------------
MANIFEST = "manifest.json"
_SCRATCH_PREFIX = ".mnm-query-"


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """Refuse an output folder that cannot receive a query's files, before any work.

    It may be missing (created later) or an existing folder; the nearest existing folder on
    its path must accept a new sub-folder (tried for real: permission bits do not tell for
    root or read-only file systems). Scratch folders left next to it by killed earlier
    queries are removed.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise QueryError(f"{out_dir}: exists and is not a folder; choose another --out")
    existing = next((p for p in [out_dir, *out_dir.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        raise QueryError(f"{out_dir}: {existing} is not a folder; choose another --out")
    try:
        shutil.rmtree(tempfile.mkdtemp(prefix=_SCRATCH_PREFIX, dir=existing))
    except OSError as error:
        raise QueryError(f"{out_dir}: {existing} is not writable ({error.strerror}); choose another "
                         "--out") from None
    if out_dir.parent.is_dir():
        for leftover in out_dir.parent.glob(f"{_SCRATCH_PREFIX}{out_dir.name}.*"):
            shutil.rmtree(leftover, ignore_errors=True)
    return out_dir


def _previous_files(out_dir: Path) -> list[str]:
    """Files written by the previous query into ``out_dir`` (from its manifest)."""
    import json

    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        return []
    try:
        files = json.loads(manifest.read_text()).get("files", [])
    except (ValueError, AttributeError):
        return []
    # names only: a manifest never makes us delete outside the folder
    return [name for name in files if isinstance(name, str) and Path(name).name == name]


def write_outputs(out_dir: str | os.PathLike, table: pd.DataFrame, maps: dict | None = None,
                  title: str = "", documents: dict | None = None) -> dict:
    """Write the table (Parquet + CSV), maps (NIfTI) and glass brains (PNG) all-or-nothing.

    ``documents`` (name -> JSON-ready dict, e.g. a meta-analysis summary) are written as
    ``<name>.json`` with them.

    The files are written into a scratch folder next to ``out_dir`` and moved in only once all
    exist; the previous query's files in ``out_dir`` (listed in its ``manifest.json``) are
    removed first, so the folder always holds one complete query. Returns output name -> path.
    """
    import json

    import matplotlib

    matplotlib.use("Agg")
    import nibabel as nib
    from nilearn import plotting

    from mnm.io import FILE_MODE
    from mnm.report.figures import frozen_gc, glass_brain_limits

    out_dir = check_output_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{out_dir.name}.", dir=out_dir.parent))
    written = {}
    try:
        table.to_parquet(scratch / "articles.parquet", index=False)
        table.to_csv(scratch / "articles.csv", index=False)
        written["articles"] = "articles.parquet"
        written["articles_csv"] = "articles.csv"
        with frozen_gc():  # nilearn's gc.collect() per image would cost about a second each
            for name, img in (maps or {}).items():
                nib.save(img, scratch / f"{name}.nii.gz")
                threshold, vmin, vmax = glass_brain_limits(img.dataobj) or (None, None, 1.0)
                # Drawn relative to the map's maximum: nilearn's colour bar breaks on spans as
                # small as a softmax over hundreds of parcels (~1e-5); the title keeps the scale.
                shown = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32) / vmax,
                                        img.affine)
                display = plotting.plot_glass_brain(
                    shown, colorbar=True, plot_abs=False, cmap="YlOrRd",
                    threshold=None if threshold is None else threshold / vmax,
                    vmin=None if vmin is None else vmin / vmax, vmax=1.0,
                    title=f"{title[:28]} ({name}, x {vmax:.2g})" if title else f"{name}, x {vmax:.2g}",
                )
                display.savefig(scratch / f"{name}.png", dpi=100)
                display.close()
                written[name] = f"{name}.nii.gz"
                written[f"{name}_png"] = f"{name}.png"
        for name, document in (documents or {}).items():
            (scratch / f"{name}.json").write_text(json.dumps(document, indent=2))
            written[name] = f"{name}.json"
        (scratch / MANIFEST).write_text(json.dumps({"title": title, "files": sorted(written.values())}))
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in _previous_files(out_dir):
            if stale not in written.values():
                (out_dir / stale).unlink(missing_ok=True)
        for relative in [*written.values(), MANIFEST]:
            os.chmod(scratch / relative, FILE_MODE)
            os.replace(scratch / relative, out_dir / relative)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {name: str(out_dir / relative) for name, relative in written.items()}
