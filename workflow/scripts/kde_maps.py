from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.kde_maps import compute_kde_maps

    inp, params = snakemake.input, snakemake.params
    compute_kde_maps(inp.atlas, inp.peaks, inp.articles, snakemake.output.maps, snakemake.output.mask,
                     fwhm_mm=params.fwhm_mm, drop_duplicate_peaks=params.drop_duplicate_peaks)
