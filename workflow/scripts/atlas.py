from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.atlas import build_atlas

    build_atlas(
        snakemake.params.name,
        snakemake.params.resources_dir,
        snakemake.output.atlas,
        snakemake.output.components,
        resolution_mm=snakemake.params.resolution_mm,
    )
