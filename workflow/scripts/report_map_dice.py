from pathlib import Path

from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.report.map_eval import evaluate_model_maps

    inp, params = snakemake.input, snakemake.params
    evaluate_model_maps(
        inp.models, inp.test_embeddings, Path(inp.atlas).parent, inp.peaks, dict(zip(params.sections, inp.text)),
        inp.articles, snakemake.output[0], fractions=params.fractions, fwhm_mm=params.fwhm_mm,
        zscore=params.zscore, articles_per_fold=params.articles_per_fold, seed=params.seed,
    )
