# Stage 4: training. One job per (model, encoder, section, atlas, fold) trains that fold of
# every repeat of the cross-validation; fold "all" trains on every article (for queries); one
# job per trade-off point (radius head, lambda_hier) trains MNM on every fold of repeat 0.
# Parameters come from config models.<name> (the MNM variants share models.mnm) and the shared
# recipe models.training; the logic is mnm.train.

TRAIN_INPUT = dict(
    text=f"{RESULTS}/text/{{encoder}}/{{section}}/embeddings.parquet",
    brain=f"{RESULTS}/brain/{{atlas}}/coefficients.parquet",
    folds=f"{RESULTS}/folds.parquet",
    articles=f"{RESULTS}/corpus/articles.parquet",
)
TRAIN_PARAMS = dict(
    models_config=lambda wildcards: config_of_model(config["models"], wildcards.model),
    encoder_config=lambda wildcards: config["text"]["encoders"][wildcards.encoder],
    seed=config["models"]["seed"],
    validation_fraction=config["folds"]["validation_fraction"],
    device=config["models"]["device"],
)
RUN_DIR = f"{RESULTS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}"


rule train_model:
    input:
        **TRAIN_INPUT,
        kde_maps=kde_maps_input,
        term_counts=term_counts_input,
    output:
        [f"{RUN_DIR}/repeat-{r}/fold-{{fold}}/{name}" for r in REPEATS for name in OUTPUT_FILES.values()],
    wildcard_constraints:
        model="|".join(MODELS),
        fold="[0-9]+",
    params:
        **TRAIN_PARAMS,
        repeats=[int(r) for r in REPEATS],
    log:
        f"{LOGS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}.tsv"
    # One thread: the default corpus is tiny (jobs run side by side) and paper-scale runs use a GPU.
    threads: 1
    # Critical path first: these jobs feed retrieval_table, the longest report job (minutes at
    # 20,000 articles), so they run before the fold-all, trade-off and map jobs, which then
    # run beside it instead of after it (benchmarks/scale.md).
    priority: 1
    # a GPU (and the GPU partition) only for torch models on a CUDA config; ridge and TF-IDF
    # never ask for one
    resources:
        mem_mb=lambda wildcards: job_resources("train_model", model_gpu(wildcards))["mem_mb"],
        runtime=job_resources("train_model")["runtime"],
        gpu=model_gpu,
        slurm_partition=model_partition,
        slurm_account=SLURM["account"],
    conda:
        "../../envs/models.yaml"
    script:
        "../scripts/train_model.py"


use rule train_model as train_model_all with:
    output:
        [f"{RUN_DIR}/fold-{{fold}}/{name}" for name in OUTPUT_FILES.values()],
    wildcard_constraints:
        model="|".join(MODELS),
        fold="all",
    priority: 0
    params:
        **TRAIN_PARAMS,
        repeats=[0],
    log:
        f"{LOGS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}.tsv"


rule train_tradeoff:
    input:
        text=f"{RESULTS}/text/{ENCODER}/{TRADEOFF['section']}/embeddings.parquet",
        brain=f"{RESULTS}/brain/{ATLAS}/coefficients.parquet",
        folds=f"{RESULTS}/folds.parquet",
        articles=f"{RESULTS}/corpus/articles.parquet",
    output:
        [f"{TRADEOFF_DIR}/{name}".replace("{fold}", fold) for fold in FOLDS for name in OUTPUT_FILES.values()],
    params:
        models_config=config_of_model(config["models"], "mnm"),
        encoder_config=config["text"]["encoders"][ENCODER],
        seed=config["models"]["seed"],
        validation_fraction=config["folds"]["validation_fraction"],
        device=config["models"]["device"],
        folds=[int(f) for f in FOLDS],
        section=TRADEOFF["section"],
        encoder=ENCODER,
        atlas=ATLAS,
    log:
        f"{LOGS}/tradeoff/{{head}}-lambda-{{lam}}.log",
    benchmark:
        f"{BENCHMARKS}/tradeoff/{{head}}-lambda-{{lam}}.tsv"
    threads: 1
    resources:
        **job_resources("train_tradeoff", model_uses_gpu("mnm", config["models"]["device"])),
        gpu=int(model_uses_gpu("mnm", config["models"]["device"])),
        **slurm(model_uses_gpu("mnm", config["models"]["device"])),
    conda:
        "../../envs/models.yaml"
    script:
        "../scripts/train_tradeoff.py"
