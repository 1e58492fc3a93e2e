"""Run the project's Snakefile in a scratch copy of the project (tests only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def make_project(tmp_path: Path, overrides: dict | None = None) -> Path:
    """Lay out Snakefile, config.yaml, workflow/ and profiles/ in ``tmp_path``.

    ``overrides`` are merged into config.yaml (nested dicts merged key by key).
    """
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "Snakefile", project / "Snakefile")
    for name in ("workflow", "profiles", "envs"):
        (project / name).symlink_to(ROOT / name)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    _merge(config, overrides or {})
    (project / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return project


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def snakemake(project: Path, *args: str, check: bool = True, timeout: int = 1800):
    """Run snakemake in ``project``; return the CompletedProcess (stdout+stderr merged)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=project, env=env, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-6000:]}")
    return result
