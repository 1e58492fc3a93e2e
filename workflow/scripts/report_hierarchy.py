from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.report.hierarchy import write_hierarchy_report

    out = snakemake.output
    write_hierarchy_report(
        snakemake.input.test_embeddings, out.table, out.geometry, out.points, out.figure, out.radii,
    )
