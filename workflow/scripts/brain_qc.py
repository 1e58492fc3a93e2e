from mnm.io import setup_logging

setup_logging(snakemake.log[0])
from mnm.brain import write_qc_maps

write_qc_maps(
    snakemake.input.atlas,
    snakemake.input.peaks,
    snakemake.params.qc_dir,
    snakemake.output.png,
    fwhm_mm=snakemake.params.fwhm_mm,
    n_maps=snakemake.params.n_maps,
)
