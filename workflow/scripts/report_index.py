from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.report.index import write_index

    inp = snakemake.input
    write_index(snakemake.output[0], inp.retrieval_md, inp.tables, inp.hierarchy, inp.geometry,
                inp.map_md, inp.figures, tradeoff_md=inp.tradeoff_md[0] if inp.tradeoff_md else None)
