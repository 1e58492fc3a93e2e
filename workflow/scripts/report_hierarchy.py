from mnm.io import setup_logging

setup_logging(snakemake.log[0])
from mnm.report.hierarchy import write_hierarchy_report  # noqa: E402

write_hierarchy_report(
    snakemake.input.test_embeddings, snakemake.input.coefficients,
    snakemake.output.table, snakemake.output.figure, snakemake.output.points,
)
