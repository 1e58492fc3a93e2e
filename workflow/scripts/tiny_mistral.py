from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.rehearsal import build_tiny_mistral

    build_tiny_mistral(snakemake.output[0])
