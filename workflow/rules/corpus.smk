# Stage 1: corpus (articles, peaks, QC) and the cross-validation folds.
from mnm.generated_pubget import CSV_FIELDS, extracted_dir_of, generated_data_dir

# Bookkeeping runs where Snakemake runs, never as a cluster job. A pubget download needs
# the network, which compute nodes often lack: with source pubget the corpus job runs there too.
localrules:
    folds,


if config["corpus"]["source"] == "pubget":

    localrules:
        corpus,


# corpus.source generated (the paper-scale rehearsal): rehearsal_articles synthetic articles
# written in pubget's layout, then read by the corpus stage exactly as pubget output
# (source pubget_dir); the folder is named by the number of articles and the seed.
GENERATED = config["corpus"]["source"] == "generated"
CORPUS = dict(config["corpus"])
GENERATED_FILES = []
if GENERATED:
    GENERATED_DIR = generated_data_dir(RESOURCES, config["rehearsal_articles"], config["rehearsal_seed"])
    GENERATED_EXTRACTED = extracted_dir_of(GENERATED_DIR, config["rehearsal_articles"], config["rehearsal_seed"])
    GENERATED_FILES = [f"{GENERATED_EXTRACTED}/{name}" for name in [*CSV_FIELDS, "info.json"]]
    CORPUS.update(source="pubget_dir", pubget_dir=str(GENERATED_DIR))

    rule generate_pubget:
        output:
            GENERATED_FILES,
        params:
            data_dir=GENERATED_DIR,
            n_articles=config["rehearsal_articles"],
            seed=config["rehearsal_seed"],
        log:
            f"{LOGS}/generate_pubget.log",
        benchmark:
            f"{BENCHMARKS}/generate_pubget.tsv"
        threads: 1
        resources:
            **job_resources("generate_pubget"),
            **slurm(),
        conda:
            "../../envs/corpus.yaml"
        script:
            "../scripts/generate_pubget.py"


rule corpus:
    input:
        GENERATED_FILES,
    output:
        articles=f"{RESULTS}/corpus/articles.parquet",
        peaks=f"{RESULTS}/corpus/peaks.parquet",
        qc=f"{RESULTS}/corpus/qc.parquet",
    params:
        corpus=CORPUS,
        resources_dir=RESOURCES,
    log:
        f"{LOGS}/corpus.log",
    benchmark:
        f"{BENCHMARKS}/corpus.tsv"
    threads: config["corpus"]["pubget"]["n_jobs"]
    resources:
        **job_resources("corpus"),
        **slurm(),
    conda:
        "../../envs/corpus.yaml"
    script:
        "../scripts/corpus.py"


rule folds:
    input:
        articles=rules.corpus.output.articles,
    output:
        f"{RESULTS}/folds.parquet",
    params:
        n_folds=config["folds"]["n_folds"],
        n_repeats=config["folds"]["n_repeats"],
        seed=config["folds"]["seed"],
    log:
        f"{LOGS}/folds.log",
    benchmark:
        f"{BENCHMARKS}/folds.tsv"
    conda:
        "../../envs/corpus.yaml"
    script:
        "../scripts/folds.py"
