from pathlib import Path

from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.report.poincare import write_poincare_figure

    write_poincare_figure(
        dict(zip(snakemake.params.labels, snakemake.input.models)), Path(snakemake.input.atlas).parent,
        snakemake.input.coefficients, snakemake.output[0],
        fwhm_mm=snakemake.params.fwhm_mm, zscore=snakemake.params.zscore,
    )
