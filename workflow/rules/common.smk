# Shared set-up: validated config, path roots, target lists. Included first by the Snakefile.
from mnm.cluster import model_uses_gpu, slurm_resources, slurm_settings
from mnm.config import validate_config

# Validate against workflow/schemas/config.schema.yaml and fill every default in place, so
# a bad value stops the run before any job starts, with the key named in the message.
_validated_config = validate_config(config)
config.clear()
config.update(_validated_config)

RESULTS = config["results_dir"]
RESOURCES = config["resources_dir"]
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
ENCODER = config["text"]["encoder"]
ATLAS = config["atlas"]["name"]
FOLDS = [str(f) for f in range(config["folds"]["n_folds"])]
# Cross-validation folds plus "all" (trained on every article, for queries).
MODEL_FOLDS = [*FOLDS, "all"]


wildcard_constraints:
    encoder="[A-Za-z0-9_.-]+",
    section="title|abstract|body|title_abstract",
    atlas="[A-Za-z0-9_-]+",
    model="[a-z_]+",
    fold="[0-9]+|all",
    shard="[0-9]+",

MODEL_FILES = ["model.pt", "history.parquet", "test_embeddings.parquet"]


def model_targets(folds=None, files=MODEL_FILES):
    """Per-fold outputs of every configured model and section (default: every fold and "all")."""
    return expand(
        f"{RESULTS}/models/{{model}}/{ENCODER}/{{section}}/{ATLAS}/fold-{{fold}}/{{file}}",
        model=config["models"]["names"],
        section=config["models"]["sections"],
        fold=MODEL_FOLDS if folds is None else folds,
        file=files,
    )


# SLURM partition and account of every job that may be submitted (config `cluster`, else the
# environment; see mnm.cluster): `**slurm(gpu)` in a rule's resources. Local runs ignore them.
SLURM = slurm_settings(config["cluster"])


def slurm(gpu=False):
    """slurm_partition + slurm_account resources of a CPU (default) or GPU job."""
    return slurm_resources(SLURM, gpu)


def model_gpu(wildcards):
    """1 when the job's model trains on a GPU (PyTorch models with models.device cuda)."""
    return int(model_uses_gpu(wildcards.model, config["models"]["device"]))


def model_partition(wildcards):
    """Partition of a training job: the GPU partition only for models that use a GPU."""
    return slurm(bool(model_gpu(wildcards)))["slurm_partition"]
