"""SLURM partition/account resolution and which training jobs get a GPU (mnm.cluster)."""

from __future__ import annotations

import pytest

from mnm.cluster import model_uses_gpu, slurm_resources, slurm_settings
from mnm.train import MODEL_NAMES

ENV = {"SBATCH_ACCOUNT": "env-acct", "SBATCH_PARTITION": "env-cpu",
       "MNM_SLURM_GPU_PARTITION": "env-gpu"}


def test_config_values_take_precedence_over_the_environment():
    settings = slurm_settings({"account": "cfg-acct", "partition": None,
                               "gpu_partition": "cfg-gpu"}, ENV)
    assert settings == {"account": "cfg-acct", "partition": "env-cpu",
                        "gpu_partition": "cfg-gpu"}


def test_environment_then_empty_and_gpu_partition_falls_back_to_partition():
    assert slurm_settings({}, ENV) == {"account": "env-acct", "partition": "env-cpu",
                                       "gpu_partition": "env-gpu"}
    assert slurm_settings(None, {}) == {"account": "", "partition": "", "gpu_partition": ""}
    only_cpu = slurm_settings({"partition": "cpu"}, {})
    assert only_cpu["gpu_partition"] == "cpu"


def test_resources_of_cpu_and_gpu_jobs():
    settings = slurm_settings({}, ENV)
    assert slurm_resources(settings, gpu=False) == {"slurm_partition": "env-cpu",
                                                    "slurm_account": "env-acct"}
    assert slurm_resources(settings, gpu=True)["slurm_partition"] == "env-gpu"


@pytest.mark.parametrize("device", ["cuda", "cpu", "auto"])
def test_only_pytorch_models_on_cuda_use_a_gpu(device, monkeypatch):
    """Decided by the config, not by the machine that builds the DAG: ``auto`` requests no
    GPU even where one is visible (a job that finds one at run time still uses it)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    uses = {name for name in MODEL_NAMES if model_uses_gpu(name, device)}
    if device in ("cpu", "auto"):
        assert uses == set()
    else:
        assert uses == {"mnm", "mnm_reverse", "mnm_no_hier", "neurocontext", "mlp", "text2brain"}
        assert not {"ridge", "tfidf"} & uses
