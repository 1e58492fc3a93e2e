from mnm.io import setup_logging

setup_logging(snakemake.log[0])
from mnm.text import gather_embeddings

gather_embeddings(
    snakemake.input.shards,
    snakemake.input.articles,
    snakemake.output.embeddings,
    snakemake.output.qc,
    section=snakemake.wildcards.section,
)
