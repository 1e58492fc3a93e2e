from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.report.map_eval import summarise_map_prediction

    out = snakemake.output
    summarise_map_prediction(snakemake.input, out.dice, out.summary, out.markdown, snakemake.params.fractions)
