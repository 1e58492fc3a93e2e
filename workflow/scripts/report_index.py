from mnm.io import setup_logging

setup_logging(snakemake.log[0])
from mnm.report.index import write_index  # noqa: E402

inp = snakemake.input
write_index(snakemake.output[0], inp.retrieval_md, inp.tables, inp.hierarchy, inp.map_md, inp.figures)
