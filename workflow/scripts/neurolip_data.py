from mnm.io import logged_job

with logged_job(snakemake):
    from pathlib import Path

    from mnm.neurolip.data import build_dataset

    build_dataset(
        snakemake.params.dataset,
        snakemake.params.data_dir,
        Path(snakemake.output.subjects).parent,
        abide=snakemake.params.abide,
        adhd=snakemake.params.adhd,
        atlas_image=snakemake.params.atlas_image,
        atlas_names=snakemake.params.atlas_names,
        kind=snakemake.params.kind,
        n_folds=snakemake.params.n_folds,
        seed=snakemake.params.seed,
    )
