# Stage 2: text embeddings, scattered over shards of articles and gathered per (encoder, section).
# Per-text vectors are cached under {RESULTS}/cache/text/{encoder}/<fingerprint>/, so reruns
# (after a crash, or with more articles) embed only what is missing.
from mnm.text import wants_gpu

# Gathering the shards is bookkeeping: it runs where Snakemake runs.
localrules:
    gather_embeddings,


TEXT_SHARDS = [str(s) for s in range(config["text"]["n_shards"])]
# Evaluated once when the DAG is built: request a GPU only when embedding will use one.
TEXT_ON_GPU = wants_gpu(config["text"]["device"])

# Every section's embedding table by the models' encoder (text.encoder). Other entries of
# text.encoders are only definitions: a --configfile that picks another encoder must not drag
# the default config's encoder into the run.
TEXT_EMBEDDINGS = expand(
    f"{RESULTS}/text/{{encoder}}/{{section}}/embeddings.parquet",
    encoder=[ENCODER],
    section=config["text"]["sections"],
)


rule embed_shard:
    input:
        articles=f"{RESULTS}/corpus/articles.parquet",
    output:
        f"{RESULTS}/text/{{encoder}}/{{section}}/shards/shard-{{shard}}.parquet",
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
    threads: 2
    resources:
        mem_mb=32000 if TEXT_ON_GPU else 4000,
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
    resources:
        mem_mb=4000,
    conda:
        "../../envs/text.yaml"
    script:
        "../scripts/text_gather.py"
