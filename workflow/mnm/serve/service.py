"""One finished run held in memory, answering text and map queries for many users at once.

The query logic is :mod:`mnm.query` (shared with ``mnm query``); this module only keeps one
:class:`mnm.query.QueryRun` loaded, serialises the model work behind a lock, and turns results
into JSON-ready records and stored maps.

Thread safety: the run's cached parts (model, atlas, projector, candidate embeddings) are all
loaded once by :meth:`QueryService.warm_up` before the first request, so no request ever
fills a cache. The model work (Hugging Face fast tokenizers raise ``Already borrowed`` when
one is used from two threads; torch already uses every core for one query) runs behind one
lock; JSON building, map storage and downloads run outside it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from mnm.query import QueryError, QueryRun, load_query_map, open_run, query_map, query_text
from mnm.serve.report import RunReport
from mnm.serve.store import MapStore

_LOG = logging.getLogger(__name__)

#: Human labels of the maps a text query returns (``parcels_<level>`` is formatted).
MAP_LABELS = {
    "decoder": "Decoder map (predicted atlas coefficients)",
    "parcels": "Parcel route, {level}",
    "voxel_map": "Predicted voxel map (4 mm decoder)",
    "uploaded": "Uploaded map (on the analysis grid)",
    "meta": "{method} meta-analysis of the articles, {kind}",
}
#: Names of a meta-analysis' maps in :data:`MAP_LABELS` (``meta_<method>_<kind>``).
META_KINDS = {"z": "z (uncorrected)", "logp": "-log10 p (uncorrected)"}
PMC_URL = "https://www.ncbi.nlm.nih.gov/pmc/articles/PMC{}/"
PUBMED_URL = "https://pubmed.ncbi.nlm.nih.gov/{}/"
DOI_URL = "https://doi.org/{}"
GZIP_MAGIC = b"\x1f\x8b"
#: Largest map an upload may declare (voxels): a 0.5 mm whole-brain grid has 58 million. A
#: few kilobytes of gzip can declare terabytes; the header is checked before any data is read.
MAX_UPLOAD_VOXELS = 2**26


@dataclass(frozen=True)
class ServeSettings:
    """The ``serve`` section of a run's config (see the config schema for each key)."""

    top_k: int = 10
    max_top_k: int = 100
    max_upload_mb: float = 50
    max_text_chars: int = 10000
    stored_maps_mb: float = 512
    threads: int = 8
    examples: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_config(cls, config: dict) -> ServeSettings:
        section = config.get("serve", {})
        names = set(cls.__dataclass_fields__)
        values = {key: value for key, value in section.items() if key in names}
        values["examples"] = tuple(values.get("examples", ()))
        return cls(**values)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def _plain(value):
    """A table cell as a JSON value (pandas NA and NaN -> None, numpy scalars -> Python)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def article_url(pmcid, pmid, doi) -> str | None:
    """Link of an article: PubMed Central when it has a PMCID, else PubMed, else its DOI."""
    if pmcid is not None:
        return PMC_URL.format(str(pmcid).removeprefix("PMC"))
    if pmid is not None:
        return PUBMED_URL.format(pmid)
    if doi is not None:
        return DOI_URL.format(doi)
    return None


def map_label(name: str) -> str:
    if name.startswith("parcels_"):
        return MAP_LABELS["parcels"].format(level=name.removeprefix("parcels_").replace("_", " "))
    if name.startswith("meta_") and name.count("_") == 2:
        _, method, kind = name.split("_")
        return MAP_LABELS["meta"].format(method=method.upper(), kind=META_KINDS.get(kind, kind))
    return MAP_LABELS.get(name, name)


def check_meta(method) -> str | None:
    """A request's ``meta`` (``ale``, ``mkda``, or empty for none) checked."""
    from mnm.meta import METHODS

    if method is None or method == "":
        return None
    if method not in METHODS:
        raise QueryError(f"meta must be one of {', '.join(METHODS)} (or empty for none), "
                         f"got {str(method)[:40]!r}")
    return method


class QueryService:
    """A loaded run answering queries; share one instance between all requests.

    Parameters
    ----------
    run : mnm.query.QueryRun
        The run (from :func:`mnm.query.open_run`).
    settings : ServeSettings
    model : str
        Name of the served model (shown on the page).
    """

    def __init__(self, run: QueryRun, settings: ServeSettings, model: str = "mnm"):
        self.run = run
        self.settings = settings
        self.model = model
        self.maps = MapStore(int(settings.stored_maps_mb * 1024 * 1024))
        self.report = RunReport(run.results / "report")
        self._model_lock = threading.Lock()
        self._upload_dir = Path(tempfile.mkdtemp(prefix="mnm-serve-uploads-"))
        self._background: bytes | None = None
        self.load_seconds: float | None = None

    @classmethod
    def open(cls, config_path="config.yaml", model: str | None = None, section: str | None = None,
             model_path=None, device: str = "cpu") -> QueryService:
        """Open a run's fold-all model (``model`` defaults to ``serve.model``) and load it."""
        from mnm.query import load_run_config

        start = time.perf_counter()
        config = load_run_config(config_path)
        model = model or config["serve"]["model"]
        run = open_run(config_path, model=model, section=section, model_path=model_path,
                       device=device)
        model = getattr(run.trained, "name", model)  # --model-path may name another model
        service = cls(run, ServeSettings.from_config(run.config), model=model)
        service.warm_up()
        service.load_seconds = time.perf_counter() - start
        return service

    def warm_up(self) -> None:
        """Load every cached part of the run now, then run one query (first-call costs)."""
        run = self.run
        for part in ("trained", "articles", "atlas", "projector", "brain_candidates",
                     "text_candidates", "parcel_routes"):
            getattr(run, part)
        self.background_bytes()
        with self._model_lock:
            query_text(run, "warm-up", top_k=1)

    def close(self) -> None:
        """Remove the private upload folder."""
        shutil.rmtree(self._upload_dir, ignore_errors=True)

    # ------------------------------------------------------------------ answers
    def health(self) -> dict:
        return {
            "status": "ok",
            "model": self.model,
            "section": self.run.section,
            "encoder": self.run.config["text"]["encoder"],
            "atlas": self.run.atlas_name,
            "n_articles": int(len(self.run.articles)),
            "stored_maps": len(self.maps),
            "stored_maps_mb": round(self.maps.nbytes / 1024 / 1024, 1),
            "load_seconds": None if self.load_seconds is None else round(self.load_seconds, 2),
        }

    def info(self) -> dict:
        """What the page needs to set itself up."""
        settings = self.settings
        return {
            **self.health(),
            "examples": list(settings.examples),
            "top_k": settings.top_k,
            "max_top_k": settings.max_top_k,
            "max_upload_mb": settings.max_upload_mb,
            "background_url": "/api/background.nii.gz",
            "report": self.report.available,
        }

    def check_k(self, k) -> int:
        """A request's ``k`` as an int in ``[1, serve.max_top_k]`` (default ``serve.top_k``)."""
        if k is None or k == "":
            return self.settings.top_k
        try:
            value = int(k)
        except (TypeError, ValueError):
            raise QueryError(f"k must be a whole number, got {str(k)[:40]!r}") from None
        if not 1 <= value <= self.settings.max_top_k:
            raise QueryError(f"k must be between 1 and {self.settings.max_top_k} "
                             f"(serve.max_top_k), got {value}")
        return value

    def articles(self, table: pd.DataFrame) -> list[dict]:
        """JSON records of a result table, with journal, year and a link added."""
        meta = self.run.articles.reindex(table["article_id"])
        records = []
        for row, journal, year in zip(table.to_dict("records"), meta["journal"].array,
                                      meta["year"].array):
            record = {key: _plain(value) for key, value in row.items()}
            record["journal"], record["year"] = _plain(journal), _plain(year)
            record["url"] = article_url(record["pmcid"], record["pmid"], record["doi"])
            records.append(record)
        return records

    def _store(self, name: str, img) -> dict:
        map_id = self.maps.add(img, name)
        return {"name": name, "label": map_label(name), "id": map_id,
                "url": f"/maps/{map_id}.nii.gz"}

    def query(self, text, k=None, meta=None) -> dict:
        """Text -> the best-matching articles and the predicted maps (stored, by URL).

        With ``meta`` (``ale`` or ``mkda``), NiMARE's meta-analysis of the articles' peaks
        (:func:`mnm.meta.meta_analysis`, as ``mnm query --meta-analysis``) adds its z and
        -log10 p maps and a ``meta_analysis`` summary (correlation with the decoder map).
        """
        if not isinstance(text, str) or not text.strip():
            raise QueryError("the query text is empty; type a few words (e.g. 'working memory')")
        if len(text) > self.settings.max_text_chars:
            raise QueryError(f"the query text has {len(text)} characters; the limit is "
                             f"{self.settings.max_text_chars} (serve.max_text_chars)")
        k = self.check_k(k)
        meta = check_meta(meta)
        start = time.perf_counter()
        summary = {}
        with self._model_lock:  # NiMARE's fit too: it uses every core, like the model
            table, maps = query_text(self.run, text, top_k=k)
            if meta:
                from mnm.meta import meta_analysis

                result = meta_analysis(self.run, table, meta, predicted=maps.get("decoder"))
                maps.update(result.output_maps())
                summary["meta_analysis"] = result.summary()
        elapsed = time.perf_counter() - start
        _LOG.info("text query (%d chars, k=%d) in %.3f s", len(text), k, elapsed)
        return {
            "query": text.strip(),
            "k": k,
            "model": self.model,
            "articles": self.articles(table),
            "maps": [self._store(name, img) for name, img in maps.items()],
            "seconds": round(elapsed, 4),
            **summary,
        }

    def decode(self, data: bytes, filename: str = "", k=None) -> dict:
        """An uploaded NIfTI map (file bytes) -> the best-matching articles, and the map."""
        shown_name = Path(filename or "uploaded map").name[:100]
        if len(data) > self.settings.max_upload_bytes:
            raise UploadTooLarge(self.settings.max_upload_mb)
        k = self.check_k(k)
        suffix = ".nii.gz" if data[:2] == GZIP_MAGIC else ".nii"
        # The file name is generated here; nothing of the request reaches the file system.
        handle, tmp = tempfile.mkstemp(suffix=suffix, dir=self._upload_dir)
        start = time.perf_counter()
        try:
            with os.fdopen(handle, "wb") as fh:
                fh.write(data)
            try:
                _check_declared_size(tmp)
                img = load_query_map(tmp)
                img = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
                with self._model_lock:
                    table = query_map(self.run, tmp, top_k=k)
            except QueryError as error:
                # Name the upload, not the server's scratch file.
                raise QueryError(str(error).replace(tmp, shown_name)) from None
        finally:
            os.unlink(tmp)
        elapsed = time.perf_counter() - start
        _LOG.info("map query (%d bytes, k=%d) in %.3f s", len(data), k, elapsed)
        return {
            "filename": shown_name,
            "k": k,
            "model": self.model,
            "articles": self.articles(table),
            "maps": [self._store("uploaded", self.on_analysis_grid(img))],
            "seconds": round(elapsed, 4),
        }

    # ------------------------------------------------------------------ images
    def on_analysis_grid(self, img) -> nib.Nifti1Image:
        """``img`` on the atlas grid, resampled as the brain stage's projector resamples a
        query map (so the map shown is the map projected); the viewer draws on that grid."""
        import warnings

        from nilearn.image import resample_to_img

        maps_img, _ = self.run.atlas
        if img.shape[:3] == maps_img.shape[:3] and np.allclose(img.affine, maps_img.affine):
            return img
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # query_map has logged the resampling already
            return resample_to_img(img, maps_img.slicer[..., 0], interpolation="continuous",
                                   force_resample=True, copy_header=True)

    def background_bytes(self) -> bytes:
        """The MNI152 template on the analysis grid, as ``.nii.gz`` (the viewer's underlay)."""
        if self._background is None:
            from nilearn.datasets import load_mni152_template

            from mnm.serve.store import nifti_gz_bytes

            resolution = int(self.run.config["atlas"]["resolution_mm"])
            template = load_mni152_template(resolution=resolution)
            self._background = nifti_gz_bytes(self.on_analysis_grid(template))
        return self._background


def _check_declared_size(path: str) -> None:
    """Refuse a map whose header declares more than :data:`MAX_UPLOAD_VOXELS` voxels."""
    try:
        shape = nib.load(path).shape  # reads the header only
    except Exception:  # not an image: load_query_map says so
        return
    if math.prod(shape) > MAX_UPLOAD_VOXELS:
        raise QueryError(f"{path}: the image declares {math.prod(shape):,} voxels (shape "
                         f"{shape}); the limit is {MAX_UPLOAD_VOXELS:,}")


class UploadTooLarge(QueryError):
    """An upload over ``serve.max_upload_mb`` (answered with HTTP 413)."""

    def __init__(self, limit_mb: float):
        super().__init__(f"the upload is larger than {limit_mb:g} MB (serve.max_upload_mb)")
