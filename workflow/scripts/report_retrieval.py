from mnm.io import setup_logging

setup_logging(snakemake.log[0])
from mnm.report.retrieval import write_retrieval_report  # noqa: E402

write_retrieval_report(
    snakemake.input, snakemake.output.table, snakemake.output.markdown,
    snakemake.output.comparison, models_order=snakemake.params.models_order,
)
