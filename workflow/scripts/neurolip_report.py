from mnm.io import logged_job

with logged_job(snakemake):
    from pathlib import Path

    from mnm.neurolip.report import write_report

    write_report(
        snakemake.input.metrics,
        snakemake.input.attention,
        Path(snakemake.output.page).parent,
        dataset=snakemake.params.dataset,
        atlas_image=snakemake.params.atlas_image,
        atlas_names=snakemake.params.atlas_names,
        compare_config=snakemake.params.compare["config"],
        compare_model=snakemake.params.compare["model"],
        compare_words=snakemake.params.compare["words"],
    )
