from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.io import read_parquet
    from mnm.report.figures import recall_bars

    recall_bars(read_parquet(snakemake.input[0]), snakemake.output[0], snakemake.params.models_order)
