from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.report.tradeoff import write_tradeoff_report

    inp, out, params = snakemake.input, snakemake.output, snakemake.params
    write_tradeoff_report(
        inp.test, inp.validation, inp.baseline, out.points, out.selection, out.markdown, out.figure,
        section=params.section, configured_lambda=params.configured_lambda,
        max_tau=params.max_tau, metric=params.metric,
    )
