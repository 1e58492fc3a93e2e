from mnm.io import logged_job

with logged_job(snakemake):
    from pathlib import Path

    from mnm.neurolip.baseline import run_baseline_fold

    run_baseline_fold(
        Path(snakemake.input.subjects).parent,
        int(snakemake.wildcards.nl_fold),
        Path(snakemake.output.metrics).parent,
        C=snakemake.params.C,
        sensitive=snakemake.params.sensitive,
        seed=snakemake.params.seed,
    )
