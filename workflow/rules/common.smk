# Shared set-up: validated config, path roots, target lists. Included first by the Snakefile.
import os

from mnm.cluster import model_uses_gpu, slurm_resources, slurm_settings
from mnm.config import validate_config
from mnm.registry import MNM_VARIANTS, OUTPUT_FILES, VOXEL_MODELS, config_of_model

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
ATLASES = config["brain"]["atlases"]
# The primary atlas: the trade-off sweep, the Poincare figure, map examples and queries use it.
ATLAS = ATLASES[0]
FOLDS = [str(f) for f in range(config["folds"]["n_folds"])]
REPEATS = [str(r) for r in range(config["folds"]["n_repeats"])]
MODELS = config["models"]["names"]
SECTIONS = config["models"]["sections"]
TRADEOFF = config["models"]["tradeoff"]
# Per-(repeat, fold) outputs of a training job, and the model trained on every article.
MODEL_DIR = f"{RESULTS}/models/{{model}}/{ENCODER}/{{section}}/{{atlas}}"
CV_DIR = f"{MODEL_DIR}/repeat-{{repeat}}/fold-{{fold}}"
ALL_DIR = f"{MODEL_DIR}/fold-all"
TRADEOFF_DIR = f"{RESULTS}/tradeoff/{ENCODER}/{TRADEOFF['section']}/{ATLAS}/{{head}}/lambda-{{lam}}/fold-{{fold}}"
TRADEOFF_POINTS = [(head, f"{lam:g}") for head in TRADEOFF["radius_heads"]
                   for lam in TRADEOFF["lambda_hier"]]


wildcard_constraints:
    encoder="[A-Za-z0-9_.-]+",
    section="title|abstract|body|title_abstract",
    atlas="[A-Za-z0-9_-]+",
    model="[a-z0-9_]+",
    fold="[0-9]+|all",
    repeat="[0-9]+",
    shard="[0-9]+",
    head="free|pinned",
    lam="[0-9.e+-]+",


def cv_outputs(file, models=MODELS, sections=SECTIONS, repeats=REPEATS, folds=FOLDS, atlases=ATLASES):
    """One per-(repeat, fold) file of every configured model, section and atlas."""
    return expand(f"{CV_DIR}/{file}", model=models, section=sections, repeat=repeats, fold=folds,
                  atlas=atlases)


def all_outputs(file, models=MODELS, sections=SECTIONS, atlases=ATLASES):
    """One file of the fold-all model of every configured model, section and atlas."""
    return expand(f"{ALL_DIR}/{file}", model=models, section=sections, atlas=atlases)


def tradeoff_outputs(file):
    """One per-fold file of every sweep point (repeat 0)."""
    return [path for head, lam in TRADEOFF_POINTS
            for path in expand(f"{TRADEOFF_DIR}/{file}", head=head, lam=lam, fold=FOLDS)]


def map_inputs(atlas):
    """Inputs of the map-prediction rules on one atlas (or on the ``{atlas}`` wildcard)."""
    return dict(
        atlas=f"{RESULTS}/atlas/{atlas}/atlas.nii.gz",
        components=f"{RESULTS}/atlas/{atlas}/components.parquet",
        peaks=f"{RESULTS}/corpus/peaks.parquet",
        articles=f"{RESULTS}/corpus/articles.parquet",
        text=expand(f"{RESULTS}/text/{ENCODER}/{{section}}/embeddings.parquet", section=SECTIONS),
    )


MODEL_OUTPUTS = (
    cv_outputs(OUTPUT_FILES["model"])
    + all_outputs(OUTPUT_FILES["model"])
    + tradeoff_outputs(OUTPUT_FILES["model"])
)


# SLURM partition and account of every job that may be submitted (config `cluster`, else the
# environment; see mnm.cluster): `**slurm(gpu)` in a rule's resources. Local runs ignore them.
SLURM = slurm_settings(config["cluster"])


def slurm(gpu=False):
    """slurm_partition + slurm_account resources of a CPU (default) or GPU job."""
    return slurm_resources(SLURM, gpu)


# The rehearsal's stand-in for Mistral-7B (config/rehearsal.yaml): a tiny randomly initialised
# Mistral and a tokenizer for the generated corpus, built by rule tiny_mistral (mnm.rehearsal). An encoder
# whose `model` is this folder depends on the rule that writes it.
TINY_MISTRAL = os.path.normpath(f"{RESOURCES}/models/tiny_mistral_generated")


def encoder_model_input(wildcards):
    """The tiny Mistral's folder when the shard's encoder uses it, else nothing."""
    model = config["text"]["encoders"][wildcards.encoder]["model"]
    return [TINY_MISTRAL] if os.path.normpath(model) == TINY_MISTRAL else []


def job_resources(rule, gpu=False):
    """mem_mb and runtime of a heavy rule's jobs from config `resources.<rule>` (mem_mb_gpu
    for a job on a GPU)."""
    spec = config["resources"][rule]
    return {"mem_mb": spec["mem_mb_gpu"] if gpu else spec["mem_mb"], "runtime": spec["runtime"]}


def model_gpu(wildcards):
    """1 when the job's model trains on a GPU (PyTorch models with models.device cuda)."""
    return int(model_uses_gpu(wildcards.model, config["models"]["device"]))


def model_partition(wildcards):
    """Partition of a training job: the GPU partition only for models that use a GPU."""
    return slurm(bool(model_gpu(wildcards)))["slurm_partition"]


def term_counts_input(wildcards):
    """The TF-IDF model reads its section's counted texts (rule term_counts)."""
    return f"{RESULTS}/text/term_counts/{wildcards.section}.npz" if wildcards.model == "tfidf" else []


def kde_maps_input(wildcards):
    """Voxel-map models (text2brain) also read the 4 mm KDE maps and their mask (rule kde_maps)."""
    if wildcards.model not in VOXEL_MODELS:
        return []
    folder = f"{RESULTS}/brain/{wildcards.atlas}/kde_4mm"
    return [f"{folder}/maps.parquet", f"{folder}/mask.nii.gz"]
