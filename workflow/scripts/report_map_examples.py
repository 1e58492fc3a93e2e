from pathlib import Path

from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.report.map_eval import write_map_examples

    inp, params = snakemake.input, snakemake.params
    write_map_examples(
        inp.model[0], inp.test_embeddings[0], Path(inp.atlas).parent, inp.peaks,
        dict(zip(params.sections, inp.text)), inp.articles, snakemake.output.examples,
        example_dir=snakemake.output.maps, fwhm_mm=params.fwhm_mm, zscore=params.zscore, seed=params.seed,
    )
