from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.brain import write_qc_maps

    write_qc_maps(
        snakemake.input.atlas,
        snakemake.input.peaks,
        snakemake.params.qc_dir,
        snakemake.output.png,
        fwhm_mm=snakemake.params.fwhm_mm,
        n_maps=snakemake.params.n_maps,
    )
