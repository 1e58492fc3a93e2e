"""Maps made for requests, kept in memory under generated ids (``/maps/<id>.nii.gz``).

A request never names a file: predicted and uploaded maps live in an in-memory store bounded
in bytes, keyed by random ids the server made, and are compressed to ``.nii.gz`` only when
someone downloads them (about 0.1 s a map on the 2 mm grid; most API clients only read the
article list).
"""

from __future__ import annotations

import gzip
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

import nibabel as nib
import numpy as np

#: Shape of the ids the store makes (and the only ids a request may look up).
MAP_ID_PATTERN = re.compile(r"^[0-9a-f]{24}$")


@dataclass
class StoredMap:
    """One map: its image until first download, then its ``.nii.gz`` bytes."""

    name: str
    img: nib.Nifti1Image | None
    data: bytes | None = None

    @property
    def nbytes(self) -> int:
        return len(self.data) if self.data is not None else self.img.dataobj.nbytes


def nifti_gz_bytes(img: nib.Nifti1Image) -> bytes:
    """A NIfTI-1 image as ``.nii.gz`` file bytes (float32, fast compression)."""
    img32 = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    img32.header.set_xyzt_units("mm")
    return gzip.compress(img32.to_bytes(), compresslevel=1, mtime=0)


class MapStore:
    """A thread-safe map store bounded in memory: oldest maps are dropped first.

    Parameters
    ----------
    max_bytes : int
        Memory the kept maps may use: an image counts its float32 voxels until its first
        download, then its compressed bytes. The newest map is always kept.
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 1:
            raise ValueError(f"map store size must be at least 1 byte, got {max_bytes}")
        self.max_bytes = max_bytes
        self._maps: OrderedDict[str, StoredMap] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._maps)

    @property
    def nbytes(self) -> int:
        """Memory the kept maps use now."""
        with self._lock:
            return sum(entry.nbytes for entry in self._maps.values())

    def add(self, img: nib.Nifti1Image, name: str) -> str:
        """Keep ``img`` and return its new id (24 random hex digits)."""
        map_id = secrets.token_hex(12)
        img = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
        with self._lock:
            self._maps[map_id] = StoredMap(name=name, img=img)
            self._evict()
        return map_id

    def _evict(self) -> None:
        total = sum(entry.nbytes for entry in self._maps.values())
        while total > self.max_bytes and len(self._maps) > 1:
            _, dropped = self._maps.popitem(last=False)
            total -= dropped.nbytes

    def get(self, map_id: str) -> tuple[str, bytes] | None:
        """``(name, .nii.gz bytes)`` of a stored map, or None for an unknown id."""
        if not MAP_ID_PATTERN.match(map_id):
            return None
        with self._lock:
            entry = self._maps.get(map_id)
            if entry is None:
                return None
            name, img, data = entry.name, entry.img, entry.data
        if data is None:
            # Compressed outside the lock (two concurrent first downloads may both compress:
            # same bytes); the image is dropped once its bytes are kept.
            data = nifti_gz_bytes(img)
            with self._lock:
                entry.data, entry.img = data, None
                self._evict()
        return name, data
