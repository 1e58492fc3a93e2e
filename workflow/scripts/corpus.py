from mnm.corpus import build_corpus
from mnm.io import setup_logging

setup_logging(snakemake.log[0])
build_corpus(
    snakemake.params.corpus,
    snakemake.output.articles,
    snakemake.output.peaks,
    snakemake.output.qc,
    resources_dir=snakemake.params.resources_dir,
)
