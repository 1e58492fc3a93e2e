"""Maps made for requests, kept in memory under generated ids (``/maps/<id>.nii.gz``).

A request never names a file: predicted and uploaded maps live in a bounded in-memory store,
keyed by random ids the server made, and are compressed to ``.nii.gz`` only when someone
downloads them (most API clients only read the article list).
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


def nifti_gz_bytes(img: nib.Nifti1Image) -> bytes:
    """A NIfTI-1 image as ``.nii.gz`` file bytes (float32, fast compression)."""
    img32 = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    img32.header.set_xyzt_units("mm")
    return gzip.compress(img32.to_bytes(), compresslevel=1, mtime=0)


class MapStore:
    """A bounded, thread-safe map store: oldest maps are dropped first.

    Parameters
    ----------
    capacity : int
        Number of maps kept; adding one more drops the oldest.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"map store capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._maps: OrderedDict[str, StoredMap] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._maps)

    def add(self, img: nib.Nifti1Image, name: str) -> str:
        """Keep ``img`` and return its new id (24 random hex digits)."""
        map_id = secrets.token_hex(12)
        with self._lock:
            self._maps[map_id] = StoredMap(name=name, img=img)
            while len(self._maps) > self.capacity:
                self._maps.popitem(last=False)
        return map_id

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
        return name, data
