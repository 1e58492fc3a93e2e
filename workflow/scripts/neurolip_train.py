from mnm.io import logged_job

with logged_job(snakemake):
    from pathlib import Path

    from mnm.neurolip.fold import run_fold
    from mnm.neurolip.train import TrainSettings

    run_fold(
        Path(snakemake.input.subjects).parent,
        snakemake.wildcards.nl_variant,
        int(snakemake.wildcards.nl_fold),
        Path(snakemake.output.metrics).parent,
        settings=TrainSettings(**snakemake.params.model, seed=snakemake.params.seed),
        loss=snakemake.params.loss,
        sensitive=snakemake.params.sensitive,
        validation_fraction=snakemake.params.validation_fraction,
        probe_C=snakemake.params.probe_C,
        threads=snakemake.threads,
    )
