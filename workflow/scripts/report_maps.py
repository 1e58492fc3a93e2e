from pathlib import Path

from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.report.maps import evaluate_map_prediction

    inp, out, params = snakemake.input, snakemake.output, snakemake.params
    evaluate_map_prediction(
        inp.models, inp.test_embeddings, Path(inp.atlas).parent, inp.peaks,
        dict(zip(params.sections, inp.text)), inp.articles, out.dice, out.summary, out.markdown,
        example_figures=out.examples, example_dir=out.maps, fractions=params.fractions,
        fwhm_mm=params.fwhm_mm, zscore=params.zscore,
        articles_per_fold=params.articles_per_fold, seed=params.seed,
    )
