"""Parts of ``mnm serve`` that need no trained run: the map store, links, settings, CLI."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from mnm.serve.service import ServeSettings, article_url, map_label
from mnm.serve.store import MAP_ID_PATTERN, MapStore


def _img(seed: int, shape=(5, 6, 7)):
    data = np.zeros(shape, dtype=np.float32)  # a blob of random values in zeros
    data[1:3, 2:4, 3:5] = np.random.default_rng(seed).normal(size=(2, 2, 2))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, -12, -14]
    return nib.Nifti1Image(data, affine)


def test_map_store_round_trip_and_ids():
    store = MapStore(max_bytes=10_000)
    img = _img(0)
    map_id = store.add(img, "decoder")
    assert MAP_ID_PATTERN.match(map_id)
    name, data = store.get(map_id)
    assert name == "decoder" and data[:2] == b"\x1f\x8b"
    back = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    np.testing.assert_array_equal(back.get_fdata(), img.get_fdata())
    np.testing.assert_array_equal(back.affine, img.affine)
    assert store.get(map_id) == (name, data)  # compressed once, then kept
    assert len({store.add(img, "x") for _ in range(3)}) == 3


def test_map_store_drops_oldest_first_within_its_memory():
    one = 5 * 6 * 7 * 4  # float32 voxels of one map, until downloaded
    store = MapStore(max_bytes=2 * one)
    first, second, third = (store.add(_img(i), f"m{i}") for i in range(3))
    assert store.get(first) is None and len(store) == 2 and store.nbytes == 2 * one
    name, data = store.get(second)  # downloaded: now kept compressed
    assert name == "m1" and store.nbytes == len(data) + one < 2 * one
    fourth = store.add(_img(3), "m3")  # over the budget: the oldest (second) goes
    assert store.get(second) is None
    assert [store.get(i)[0] for i in (third, fourth)] == ["m2", "m3"]
    big = MapStore(max_bytes=10)  # the newest map is kept even when larger than the budget
    assert big.get(big.add(_img(0), "m"))[0] == "m"
    with pytest.raises(ValueError, match="at least 1"):
        MapStore(0)


@pytest.mark.parametrize("bad", ["", "../../etc/passwd", "0" * 23, "0" * 25, "G" * 24,
                                 "/tmp/x", "%2e%2e"])
def test_map_store_refuses_anything_but_its_ids(bad):
    store = MapStore(max_bytes=10_000)
    store.add(_img(0), "m")
    assert store.get(bad) is None


def test_article_links_hand_worked():
    pmc = "https://www.ncbi.nlm.nih.gov/pmc/articles/"
    assert article_url(9581239, 1, "10/x") == pmc + "PMC9581239/"
    assert article_url("PMC42", None, None) == pmc + "PMC42/"
    assert article_url(None, 16039570, None) == "https://pubmed.ncbi.nlm.nih.gov/16039570/"
    assert article_url(None, None, "10.1000/abc") == "https://doi.org/10.1000/abc"
    assert article_url(None, None, None) is None
    assert map_label("parcels_level_2") == "Parcel route, level 2"
    assert map_label("decoder").startswith("Decoder map")


def test_settings_from_validated_config():
    from mnm.config import validate_config

    settings = ServeSettings.from_config(validate_config({"serve": {"max_upload_mb": 0.5}}))
    assert settings.max_upload_bytes == 512 * 1024
    assert settings.top_k == 10 and settings.max_top_k == 100 and settings.threads == 8
    assert settings.examples and all(isinstance(e, str) for e in settings.examples)


def test_cli_binds_loopback_by_default_and_flags_override(monkeypatch, tmp_path):
    """`mnm serve` takes host/port from the config's serve section, flags override them."""
    import mnm.serve.server
    import mnm.serve.service
    from mnm.cli import main

    calls = []

    class FakeService:
        @classmethod
        def open(cls, config_path, **kwargs):
            calls.append(("open", str(config_path), kwargs["model"]))
            return cls()

    monkeypatch.setattr(mnm.serve.service, "QueryService", FakeService)
    monkeypatch.setattr(mnm.serve.server, "serve",
                        lambda service, host, port: calls.append(("serve", host, port)))
    monkeypatch.setattr("torch.set_num_threads", lambda n: calls.append(("threads", n)))
    config = tmp_path / "config.yaml"
    config.write_text("serve: {port: 8123}\n")
    assert main(["serve", "--config", str(config)]) == 0
    assert calls == [("threads", 1), ("open", str(config), None), ("serve", "127.0.0.1", 8123)]
    assert main(["serve", "--config", str(config), "--host", "0.0.0.0", "--port", "0",
                 "--model", "neurocontext"]) == 0
    assert calls[-1] == ("serve", "0.0.0.0", 0) and calls[-2][2] == "neurocontext"


def test_cli_errors(tmp_path, capsys):
    from mnm.cli import main

    assert main(["serve", "--config", str(tmp_path / "none.yaml")]) == 3
    assert "config file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("serve: {port: 70000}\n")
    assert main(["serve", "--config", str(bad)]) == 2
    assert "serve.port" in capsys.readouterr().err
    assert main(["serve", "--config", str(bad), "--port", "-1"]) == 2
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"results_dir: {tmp_path / 'no_results'}\n")
    assert main(["serve", "--config", str(missing)]) == 3
    assert "snakemake" in capsys.readouterr().err
