from mnm.io import setup_logging

setup_logging(snakemake.log[0])
from mnm.io import read_parquet  # noqa: E402
from mnm.report.figures import recall_bars  # noqa: E402

recall_bars(read_parquet(snakemake.input[0]), snakemake.output[0], snakemake.params.models_order)
