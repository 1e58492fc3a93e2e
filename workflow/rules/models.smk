# Stage 4: one training job per (model, encoder, section, atlas, fold); fold "all" trains on
# every article (for queries). Parameters come from config models.<name> (the MNM variants
# share models.mnm); the logic is mnm.train.train_fold.
from mnm.train import MODEL_NAMES, model_params

MODELS_ON_GPU = config["models"]["device"] == "cuda"


MODEL_OUTPUTS = model_targets()


rule train_model:
    input:
        text=f"{RESULTS}/text/{{encoder}}/{{section}}/embeddings.parquet",
        brain=f"{RESULTS}/brain/{{atlas}}/coefficients.parquet",
        folds=f"{RESULTS}/folds.parquet",
        articles=f"{RESULTS}/corpus/articles.parquet",
    output:
        model=f"{RESULTS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}/model.pt",
        history=f"{RESULTS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}/history.parquet",
        test_embeddings=f"{RESULTS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}/test_embeddings.parquet",
    wildcard_constraints:
        model="|".join(MODEL_NAMES),
        fold="[0-9]+|all",
    params:
        model_params=lambda wildcards: model_params(config["models"], wildcards.model),
        encoder_config=lambda wildcards: config["text"]["encoders"][wildcards.encoder],
        seed=config["models"]["seed"],
        validation_fraction=config["folds"]["validation_fraction"],
        device=config["models"]["device"],
    log:
        f"{LOGS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}.log",
    benchmark:
        f"{BENCHMARKS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}.tsv"
    # One thread: the default corpus is tiny (jobs run side by side) and paper-scale runs use a GPU.
    threads: 1
    resources:
        mem_mb=16000 if MODELS_ON_GPU else 4000,
        gpu=1 if MODELS_ON_GPU else 0,
    conda:
        "../../envs/models.yaml"
    script:
        "../scripts/train_model.py"
