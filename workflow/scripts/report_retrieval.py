from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.report.retrieval import evaluate_retrieval

    evaluate_retrieval(
        snakemake.input, snakemake.output.metrics, snakemake.output.table, snakemake.output.markdown,
        snakemake.output.comparison, snakemake.params.ks, models_order=snakemake.params.models_order,
        seed=snakemake.params.seed,
    )
