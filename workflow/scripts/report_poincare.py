from pathlib import Path

from mnm.io import setup_logging

setup_logging(snakemake.log[0])
from mnm.report.maps import write_poincare_figure  # noqa: E402

write_poincare_figure(
    snakemake.input.model, Path(snakemake.input.atlas).parent, snakemake.output[0],
    fwhm_mm=snakemake.params.fwhm_mm, zscore=snakemake.params.zscore,
)
