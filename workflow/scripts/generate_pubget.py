from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.generated_pubget import write_generated_pubget

    write_generated_pubget(snakemake.params.data_dir, snakemake.params.n_articles, seed=snakemake.params.seed)
