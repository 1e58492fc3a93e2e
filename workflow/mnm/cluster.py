"""Scheduler resources of the jobs: SLURM partition and account, and who gets a GPU.

The rules attach ``slurm_partition`` and ``slurm_account`` to every job that may be
submitted (snakemake-executor-plugin-slurm reads these two resource names); local runs
ignore them. Values come from the ``cluster`` section of the configuration, else from the
environment of the user who starts Snakemake, else they stay empty and the plugin falls
back to its own defaults (the cluster's default partition; an account guessed from
``sacct``).

Environment variables read (the first two are sbatch's own input variables, so a shell
already set up for ``sbatch`` needs nothing more):

``SBATCH_ACCOUNT``
    account, when ``cluster.account`` is null.
``SBATCH_PARTITION``
    partition of CPU jobs, when ``cluster.partition`` is null.
``MNM_SLURM_GPU_PARTITION``
    partition of GPU jobs, when ``cluster.gpu_partition`` is null (then the CPU partition).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ENVIRONMENT = {
    "account": "SBATCH_ACCOUNT",
    "partition": "SBATCH_PARTITION",
    "gpu_partition": "MNM_SLURM_GPU_PARTITION",
}


def slurm_settings(cluster_config: Mapping | None,
                   environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Account and partitions for the jobs: config value, else environment, else "".

    Parameters
    ----------
    cluster_config : mapping or None
        The validated ``cluster`` section (keys ``account``, ``partition``,
        ``gpu_partition``; null means "not set").
    environ : mapping, optional
        Environment to read (default :data:`os.environ`).

    Returns
    -------
    dict with keys ``account``, ``partition``, ``gpu_partition`` (strings, "" when unset;
    the plugin treats an empty value as absent). ``gpu_partition`` falls back to
    ``partition``.
    """
    environ = os.environ if environ is None else environ
    cluster_config = cluster_config or {}
    settings = {}
    for key, variable in ENVIRONMENT.items():
        value = cluster_config.get(key)
        if value is None:
            value = environ.get(variable, "")
        settings[key] = str(value).strip()
    settings["gpu_partition"] = settings["gpu_partition"] or settings["partition"]
    return settings


def slurm_resources(settings: Mapping[str, str], gpu: bool) -> dict[str, str]:
    """``slurm_partition`` and ``slurm_account`` resources of a job (GPU or CPU)."""
    return {
        "slurm_partition": settings["gpu_partition" if gpu else "partition"],
        "slurm_account": settings["account"],
    }


def model_uses_gpu(model: str, device: str) -> bool:
    """Whether training ``model`` with ``models.device`` = ``device`` runs on a GPU.

    Only the PyTorch models do (MNM variants, NeuroConText, MLP); ridge and TF-IDF are
    scikit-learn and never request one. Decided by the configuration, as for the text stage
    (:func:`mnm.text.wants_gpu`): ``cuda`` requests a GPU, ``auto`` does not.
    """
    from mnm.registry import TORCH_MODELS
    from mnm.text import wants_gpu

    return model in TORCH_MODELS and wants_gpu(device)
