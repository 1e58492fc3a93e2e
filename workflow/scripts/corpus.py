from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.corpus import build_corpus

    build_corpus(
        snakemake.params.corpus,
        snakemake.output.articles,
        snakemake.output.peaks,
        snakemake.output.qc,
        resources_dir=snakemake.params.resources_dir,
    )
