from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.text import gather_embeddings

    gather_embeddings(
        snakemake.input.shards,
        snakemake.input.articles,
        snakemake.output.embeddings,
        snakemake.output.qc,
        section=snakemake.wildcards.section,
    )
