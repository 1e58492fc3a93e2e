from mnm.io import setup_logging

setup_logging(snakemake.log[0])
from mnm.atlas import build_atlas

build_atlas(
    snakemake.params.name,
    snakemake.params.resources_dir,
    snakemake.output.atlas,
    snakemake.output.components,
    resolution_mm=snakemake.params.resolution_mm,
    difumo_dimension=snakemake.params.difumo_dimension,
)
