"""Atomic writes and vector <-> Parquet helpers shared by every stage.

Every output of the pipeline goes through these functions so that a killed job never
leaves a half-written file behind: data are written to a temporary file in the target
folder and moved into place with :func:`os.replace`, which is atomic on POSIX.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "atomic_path",
    "job_usage",
    "USAGE_FORMAT",
    "USAGE_PATTERN",
    "write_parquet",
    "write_parquet_tables",
    "read_parquet",
    "write_matrix",
    "read_matrix",
    "matrix_from_column",
    "vectors_to_arrow",
    "save_nifti",
    "setup_logging",
    "logged_job",
]


def _process_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Permissions of files the pipeline writes: ``0o666`` minus the umask, as ``open()`` gives.
FILE_MODE = 0o666 & ~_process_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    Parameters
    ----------
    path : path-like
        Final destination. Parent folders are created.
    suffix : str, optional
        Suffix of the temporary file (some writers infer the format from it,
        e.g. ``.nii.gz``). Defaults to the destination's full suffix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 files; give the final file the usual permissions (umask
        # respected) so that colleagues sharing a group can read a results folder.
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def vectors_to_arrow(matrix: np.ndarray) -> pa.Array:
    """Convert a 2D array to an Arrow ``list<float32>`` array (one list per row)."""
    matrix = np.ascontiguousarray(np.asarray(matrix, dtype=np.float32))
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2D matrix, got shape {matrix.shape}")
    n, d = matrix.shape
    offsets = np.arange(0, (n + 1) * d, d, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.ravel()))


def write_parquet(table: pd.DataFrame | pa.Table, path: str | os.PathLike) -> None:
    """Write a DataFrame or Arrow table to Parquet atomically."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_parquet_tables(tables, path: str | os.PathLike) -> None:
    """Write Arrow tables of one schema as consecutive row groups of one Parquet file,
    atomically: a table larger than memory is written block by block (at least one table)."""
    with atomic_path(path) as tmp:
        writer = None
        try:
            for table in tables:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"{path}: no table to write")


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file (or only ``columns`` of it) into pandas.

    A missing file, or a requested column the file lacks, raises an error naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found (has the stage that makes it run?)")
    if columns is not None:
        present = set(pq.read_schema(path).names)
        missing = [c for c in columns if c not in present]
        if missing:
            raise KeyError(f"{path}: column(s) {missing} missing")
    return pq.read_table(path, columns=columns).to_pandas()


def write_matrix(
    path: str | os.PathLike,
    ids,
    matrix: np.ndarray,
    column: str = "embedding",
    id_column: str = "article_id",
    extra: dict | None = None,
) -> None:
    """Write ``ids`` and the rows of ``matrix`` as a ``list<float32>`` column.

    ``extra`` maps further column names to 1D arrays (or 2D arrays, stored as vectors).
    """
    ids = [str(i) for i in ids]
    matrix = np.asarray(matrix, dtype=np.float32)
    if len(ids) != len(matrix):
        raise ValueError(f"{path}: {len(ids)} ids but {len(matrix)} rows")
    columns = {id_column: pa.array(ids, pa.string()), column: vectors_to_arrow(matrix)}
    for name, values in (extra or {}).items():
        values = np.asarray(values)
        columns[name] = vectors_to_arrow(values) if values.ndim == 2 else pa.array(values)
    write_parquet(pa.table(columns), path)


def matrix_from_column(column) -> np.ndarray:
    """Stack a list column (Arrow ChunkedArray or pandas Series of arrays) to float32 2D."""
    if isinstance(column, (pa.ChunkedArray, pa.Array)):
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if len(column) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        values = column.flatten().to_numpy(zero_copy_only=False)
        return values.astype(np.float32, copy=False).reshape(len(column), -1)
    rows = list(column)
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(r, dtype=np.float32) for r in rows])


def read_matrix(
    path: str | os.PathLike, column: str = "embedding", id_column: str = "article_id"
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(ids, matrix)`` written by :func:`write_matrix`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found (has the stage that makes it run?)")
    # Read batch by batch into one preallocated array: reading the whole table first held the
    # Arrow copy and the NumPy copy at once (2 x 2.35 GB for 20,000 Text2Brain maps).
    source = pq.ParquetFile(path)
    ids, matrix, start = [], None, 0
    for batch in source.iter_batches(batch_size=1024, columns=[id_column, column]):
        block = matrix_from_column(batch.column(column))
        if matrix is None:
            matrix = np.empty((source.metadata.num_rows, block.shape[1]), dtype=np.float32)
        matrix[start:start + len(block)] = block
        start += len(block)
        ids.extend(batch.column(id_column).to_pylist())
    if matrix is None:
        matrix = np.zeros((0, 0), dtype=np.float32)
    return np.asarray(ids, dtype=object), matrix


def save_nifti(img, path: str | os.PathLike) -> None:
    """Save a nibabel image atomically (``.nii.gz`` compression kept)."""
    import nibabel as nib

    with atomic_path(path, suffix=".nii.gz" if str(path).endswith(".gz") else ".nii") as tmp:
        nib.save(img, tmp)


@contextlib.contextmanager
def logged_job(smk):
    """Run a Snakemake ``script:`` job body with its log set up first and failures logged.

    The log file named by the rule's ``log:`` receives every message and, when the body
    raises, the full traceback (then the exception propagates, so the job fails)::

        with logged_job(snakemake):
            from mnm.brain import compute_coefficients
            compute_coefficients(...)
    """
    log = setup_logging(smk.log[0] if len(smk.log) else None)
    try:
        yield log
    except BaseException:
        log.exception("job failed (rule %s)", getattr(smk, "rule", "?"))
        raise
    finally:
        log.info(USAGE_FORMAT, *job_usage())


#: Last line of every job's log: the process's CPU time and peak resident memory as the kernel
#: counted them (benchmarks/scale.py reads it). Snakemake's ``benchmark:`` file samples a
#: job's CPU and memory, every 0.5 s for its first 15 s and then every 30 s, so it misses
#: the end and the peaks of longer jobs.
USAGE_FORMAT = "job usage: cpu_s=%.2f max_rss_mb=%.1f"
USAGE_PATTERN = r"job usage: cpu_s=(?P<cpu_s>[0-9.]+) max_rss_mb=(?P<max_rss_mb>[0-9.]+)"


def job_usage() -> tuple[float, float]:
    """CPU seconds (user + system) and peak resident memory (MB) of this process and its
    finished children, since the process started.

    CPU from :func:`resource.getrusage`. The peak is the kernel's high-water mark of this
    program (``VmHWM`` of ``/proc/self/status``, kB): Linux's ``ru_maxrss`` also keeps the
    memory of the process image before ``exec`` (the forking Snakemake or pytest process),
    which overstates small jobs. Without ``/proc``, ``ru_maxrss`` (kB on Linux).
    """
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    try:
        with open("/proc/self/status") as status:
            peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        peak_kb = own.ru_maxrss
    return cpu_s, max(peak_kb, children.ru_maxrss) / 1024


def setup_logging(log_file: str | os.PathLike | None = None, level=logging.INFO) -> logging.Logger:
    """Log to stderr and, when given, to ``log_file`` (Snakemake's ``log:``)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    return logging.getLogger("mnm")
