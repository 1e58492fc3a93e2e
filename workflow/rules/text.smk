# Stage 2: text embeddings, scattered over shards of articles and gathered per (encoder, section).
# Per-text vectors are cached under {RESULTS}/cache/text/{encoder}/<fingerprint>/, so reruns
# (after a crash, or with more articles) embed only what is missing.
from mnm.text import wants_gpu

# Gathering the shards is bookkeeping: it runs where Snakemake runs; so is writing the tiny
# generated model of the rehearsal (seconds).
localrules:
    gather_embeddings,
    tiny_mistral,


TEXT_SHARDS = [str(s) for s in range(config["text"]["n_shards"])]
# Decided by the config (text.device cuda), never by the machine that builds the DAG.
TEXT_ON_GPU = wants_gpu(config["text"]["device"])

# Every section's embedding table by the models' encoder (text.encoder). Other entries of
# text.encoders are only definitions: a --configfile that picks another encoder must not drag
# the default config's encoder into the run.
TEXT_EMBEDDINGS = expand(
    f"{RESULTS}/text/{{encoder}}/{{section}}/embeddings.parquet",
    encoder=[ENCODER],
    section=config["text"]["sections"],
)


rule tiny_mistral:
    output:
        directory(TINY_MISTRAL),
    log:
        f"{LOGS}/tiny_mistral.log",
    benchmark:
        f"{BENCHMARKS}/tiny_mistral.tsv"
    conda:
        "../../envs/text.yaml"
    script:
        "../scripts/tiny_mistral.py"


rule embed_shard:
    input:
        articles=f"{RESULTS}/corpus/articles.parquet",
        model=encoder_model_input,
    output:
        # A stepping stone to embeddings.parquet: the vectors live on in the per-article
        # cache, so a rerun after the gather rebuilds a shard from the cache in seconds.
        temp(f"{RESULTS}/text/{{encoder}}/{{section}}/shards/shard-{{shard}}.parquet"),
    params:
        encoder_cfg=lambda wildcards: config["text"]["encoders"][wildcards.encoder],
        n_shards=config["text"]["n_shards"],
        device=config["text"]["device"],
        checkpoint_every=config["text"]["checkpoint_every"],
        checkpoint_seconds=config["text"]["checkpoint_seconds"],
        cache_dir=lambda wildcards: f"{RESULTS}/cache/text/{wildcards.encoder}",
    log:
        f"{LOGS}/text/{{encoder}}/{{section}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/text/{{encoder}}/{{section}}/shard-{{shard}}.tsv"
    threads: config["text"]["threads"]
    resources:
        **job_resources("embed_shard", TEXT_ON_GPU),
        gpu=1 if TEXT_ON_GPU else 0,
        **slurm(TEXT_ON_GPU),
    conda:
        "../../envs/text.yaml"
    script:
        "../scripts/text_embed_shard.py"


rule gather_embeddings:
    input:
        articles=f"{RESULTS}/corpus/articles.parquet",
        shards=expand(
            f"{RESULTS}/text/{{{{encoder}}}}/{{{{section}}}}/shards/shard-{{shard}}.parquet",
            shard=TEXT_SHARDS,
        ),
    output:
        embeddings=f"{RESULTS}/text/{{encoder}}/{{section}}/embeddings.parquet",
        qc=f"{RESULTS}/text/{{encoder}}/{{section}}/qc.parquet",
    log:
        f"{LOGS}/text/{{encoder}}/{{section}}/gather.log",
    benchmark:
        f"{BENCHMARKS}/text/{{encoder}}/{{section}}/gather.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../../envs/text.yaml"
    script:
        "../scripts/text_gather.py"


# The TF-IDF baseline's tokens, counted once per section for all its fold jobs
# (mnm.text.term_counts): each job used to tokenise the whole corpus again.
rule term_counts:
    input:
        articles=f"{RESULTS}/corpus/articles.parquet",
    output:
        f"{RESULTS}/text/term_counts/{{section}}.npz",
    log:
        f"{LOGS}/text/term_counts/{{section}}.log",
    benchmark:
        f"{BENCHMARKS}/text/term_counts/{{section}}.tsv"
    threads: 1
    resources:
        **job_resources("term_counts"),
        **slurm(),
    conda:
        "../../envs/models.yaml"  # scikit-learn's tokeniser, as the model's
    script:
        "../scripts/text_term_counts.py"
