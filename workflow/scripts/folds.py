from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.folds import write_folds

    write_folds(snakemake.input.articles, snakemake.output[0], snakemake.params.n_folds,
                snakemake.params.n_repeats, snakemake.params.seed)
