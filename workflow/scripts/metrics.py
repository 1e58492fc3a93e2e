from mnm.io import setup_logging

setup_logging(snakemake.log[0])
from mnm.report.retrieval import fold_metrics  # noqa: E402

fold_metrics(snakemake.input[0], snakemake.output[0], snakemake.params.ks)
