from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.brain import compute_coefficients

    params = snakemake.params
    compute_coefficients(
        snakemake.input.atlas, snakemake.input.peaks, snakemake.input.articles, snakemake.output[0],
        fwhm_mm=params.fwhm_mm, zscore=params.zscore, delta=params.delta,
        drop_duplicate_peaks=params.drop_duplicate_peaks,
    )
