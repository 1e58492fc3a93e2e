"""Query outputs: glass-brain colour limits and all-or-nothing writes (no trained run needed)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mnm.query import QueryError, load_query_map, write_outputs
from mnm.report.figures import glass_brain_limits

TABLE = pd.DataFrame({"rank": [1], "article_id": ["a"], "score": [0.5], "title": ["t"],
                      "pmcid": [1], "pmid": [2], "doi": ["d"]})


def _img(data):
    return nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))


def test_glass_brain_limits_hand_worked():
    values = np.arange(1, 11, dtype=float)  # top 10% of 1..10 is the value 10
    threshold, vmin, vmax = glass_brain_limits(np.r_[values, 0, -3])
    assert np.quantile(values, 0.9) - 1e-4 < threshold < np.quantile(values, 0.9)
    assert vmin == threshold and vmax == 10.0
    flat = glass_brain_limits(np.full(50, 0.0028))  # all equal: colours from 0
    assert flat[1] == 0.0 and flat[2] == pytest.approx(0.0028) and flat[0] < 0.0028
    assert glass_brain_limits(np.zeros(5)) is None


@pytest.mark.parametrize("fill", ["flat", "ramp", "empty"])
def test_write_outputs_any_map(tmp_path, fill):
    data = np.zeros((12, 12, 12))
    if fill == "flat":
        data[3:9, 3:9, 3:9] = 0.0028
    elif fill == "ramp":
        data[3:9, 3:9, 3:9] = np.random.default_rng(0).random((6, 6, 6))
    paths = write_outputs(tmp_path / "out", TABLE, {"decoder": _img(data)}, title="q")
    assert nib.load(paths["decoder"]).shape == (12, 12, 12)
    assert pd.read_csv(paths["articles_csv"])["article_id"].tolist() == ["a"]
    assert (tmp_path / "out" / "decoder.png").stat().st_size > 1000


def test_write_outputs_is_all_or_nothing(tmp_path):
    with pytest.raises(Exception):
        write_outputs(tmp_path / "out", TABLE, {"good": _img(np.ones((4, 4, 4))),
                                                "bad": "not an image"})
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # no scratch folder left behind


def test_load_query_map_errors(tmp_path):
    four_d = tmp_path / "four_d.nii.gz"
    nib.save(_img(np.ones((3, 3, 3, 2))), four_d)
    with pytest.raises(QueryError, match="3D"):
        load_query_map(four_d)
    empty = tmp_path / "empty.nii.gz"
    nib.save(_img(np.zeros((3, 3, 3))), empty)
    with pytest.raises(QueryError, match="empty"):
        load_query_map(empty)
    single = tmp_path / "single.nii.gz"
    nib.save(_img(np.ones((3, 3, 3, 1))), single)
    assert load_query_map(single).shape == (3, 3, 3)
    with pytest.raises(QueryError, match="not found"):
        load_query_map(tmp_path / "missing.nii.gz")


def test_write_outputs_tiny_value_span(tmp_path):
    """A softmax over hundreds of parcels: values ~2.6e-3 spanning ~1e-5 (nilearn's colour
    bar fails on such spans in absolute units)."""
    data = np.zeros((30, 30, 30))
    data[5:25, 5:25, 5:25] = 0.0024929 + np.random.default_rng(0).random((20, 20, 20)) * 2.2e-4
    paths = write_outputs(tmp_path / "out", TABLE, {"parcels": _img(data)}, title="q")
    np.testing.assert_allclose(nib.load(paths["parcels"]).get_fdata(), data, rtol=1e-6)
    assert (tmp_path / "out" / "parcels.png").stat().st_size > 1000
