from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.neurolip.texts import build_texts
    from mnm.text import Encoder

    build_texts(
        snakemake.input.subjects,
        snakemake.params.dataset,
        snakemake.params.templates,
        snakemake.params.prompt_template,
        Encoder.from_config(snakemake.params.encoder_cfg, device=snakemake.params.device),
        snakemake.output.texts,
        snakemake.output.subject_texts,
        snakemake.output.tokens,
    )
