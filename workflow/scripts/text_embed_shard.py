from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.text import embed_shard

    embed_shard(
        snakemake.input.articles,
        snakemake.output[0],
        encoder_cfg=snakemake.params.encoder_cfg,
        section=snakemake.wildcards.section,
        shard=int(snakemake.wildcards.shard),
        n_shards=snakemake.params.n_shards,
        cache_dir=snakemake.params.cache_dir,
        device=snakemake.params.device,
        threads=snakemake.threads,
        checkpoint_every=snakemake.params.checkpoint_every,
        checkpoint_seconds=snakemake.params.checkpoint_seconds,
    )
