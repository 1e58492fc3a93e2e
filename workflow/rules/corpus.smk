# Stage 1: corpus (articles, peaks, QC) and the cross-validation folds.

# Bookkeeping runs where Snakemake runs, never as a cluster job. A pubget download needs
# the network, which compute nodes often lack: with source pubget the corpus job runs there too.
localrules:
    folds,


if config["corpus"]["source"] == "pubget":

    localrules:
        corpus,


rule corpus:
    output:
        articles=f"{RESULTS}/corpus/articles.parquet",
        peaks=f"{RESULTS}/corpus/peaks.parquet",
        qc=f"{RESULTS}/corpus/qc.parquet",
    params:
        corpus=config["corpus"],
        resources_dir=RESOURCES,
    log:
        f"{LOGS}/corpus.log",
    benchmark:
        f"{BENCHMARKS}/corpus.tsv"
    threads: config["corpus"]["pubget"]["n_jobs"]
    resources:
        mem_mb=4000,
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
    conda:
        "../../envs/corpus.yaml"
    script:
        "../scripts/folds.py"
