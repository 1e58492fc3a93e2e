from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.train import train_fold_from_snakemake

    train_fold_from_snakemake(snakemake)
