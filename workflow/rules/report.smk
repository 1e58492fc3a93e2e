# Stage 5: evaluation and report. Per-fold metrics, the Table-1 aggregate, the hierarchy
# analysis, multi-level map prediction, figures and report/index.md (the target of rule all).
# Logic lives in mnm.metrics and mnm.report; per-fold inputs come from model_targets()
# (workflow/rules/models.smk).
from mnm.train import MNM_VARIANTS

EVAL = config["evaluation"]
REPORT = f"{RESULTS}/report"
FIGURES = f"{REPORT}/figures"
ATLAS_DIR = f"{RESULTS}/atlas/{ATLAS}"
# Hyperbolic variants trained in this run (hierarchy analysis) and the one drawn on the disk.
HYPERBOLIC_MODELS = [m for m in config["models"]["names"] if m in MNM_VARIANTS]
POINCARE_MODEL = "mnm" if "mnm" in HYPERBOLIC_MODELS else (HYPERBOLIC_MODELS or [None])[0]
EXAMPLE_FIGURES = [f"{FIGURES}/map_example_{i}.png" for i in range(EVAL["n_example_maps"])]


# Per-fold test embeddings of the MNM variants only (the hierarchy analysis).
HYPERBOLIC_TEST_EMBEDDINGS = expand(
    f"{RESULTS}/models/{{model}}/{ENCODER}/{{section}}/{ATLAS}/fold-{{fold}}/test_embeddings.parquet",
    model=HYPERBOLIC_MODELS,
    section=config["models"]["sections"],
    fold=FOLDS,
)
# Every figure the index page links.
REPORT_FIGURES = (
    [f"{FIGURES}/recall.png", f"{FIGURES}/hierarchy_x0_vs_n_active.png"]
    + ([f"{FIGURES}/poincare_disk.png"] if POINCARE_MODEL is not None else [])
    + EXAMPLE_FIGURES
)


rule metrics:
    input:
        f"{RESULTS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}/test_embeddings.parquet",
    output:
        f"{RESULTS}/models/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}/metrics.parquet",
    wildcard_constraints:
        fold="[0-9]+",
    params:
        ks=EVAL["recall_k"],
    log:
        f"{LOGS}/metrics/{{model}}/{{encoder}}/{{section}}/{{atlas}}/fold-{{fold}}.log",
    resources:
        mem_mb=2000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/metrics.py"


rule retrieval_table:
    input:
        model_targets(folds=FOLDS, files=["metrics.parquet"]),
    output:
        table=f"{REPORT}/retrieval.parquet",
        markdown=report(
            f"{REPORT}/retrieval.md",
            caption="../report/retrieval.rst",
            category="Retrieval",
        ),
        comparison=f"{REPORT}/retrieval_comparison.parquet",
    params:
        models_order=config["models"]["names"],
    log:
        f"{LOGS}/report/retrieval_table.log",
    resources:
        mem_mb=2000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_retrieval.py"


rule figures:
    input:
        f"{REPORT}/retrieval.parquet",
    output:
        report(f"{FIGURES}/recall.png", caption="../report/recall.rst", category="Retrieval"),
    params:
        models_order=config["models"]["names"],
    log:
        f"{LOGS}/report/figures.log",
    resources:
        mem_mb=2000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_figures.py"


rule hierarchy:
    input:
        test_embeddings=HYPERBOLIC_TEST_EMBEDDINGS,
        coefficients=f"{RESULTS}/brain/{ATLAS}/coefficients.parquet",
    output:
        table=f"{REPORT}/hierarchy.parquet",
        points=f"{REPORT}/hierarchy_points.parquet",
        figure=report(
            f"{FIGURES}/hierarchy_x0_vs_n_active.png",
            caption="../report/hierarchy.rst",
            category="Hierarchy",
        ),
    log:
        f"{LOGS}/report/hierarchy.log",
    resources:
        mem_mb=4000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_hierarchy.py"


rule poincare:
    input:
        model=f"{RESULTS}/models/{POINCARE_MODEL}/{ENCODER}/{config['models']['sections'][0]}/{ATLAS}/fold-all/model.pt",
        atlas=f"{ATLAS_DIR}/atlas.nii.gz",
        components=f"{ATLAS_DIR}/components.parquet",
    output:
        report(f"{FIGURES}/poincare_disk.png", caption="../report/poincare.rst", category="Hierarchy"),
    params:
        fwhm_mm=config["brain"]["fwhm_mm"],
        zscore=config["brain"]["zscore"],
    log:
        f"{LOGS}/report/poincare.log",
    benchmark:
        f"{BENCHMARKS}/report/poincare.tsv"
    resources:
        mem_mb=8000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_poincare.py"


rule map_prediction:
    input:
        models=model_targets(folds=FOLDS, files=["model.pt"]),
        test_embeddings=model_targets(folds=FOLDS, files=["test_embeddings.parquet"]),
        atlas=f"{ATLAS_DIR}/atlas.nii.gz",
        components=f"{ATLAS_DIR}/components.parquet",
        peaks=f"{RESULTS}/corpus/peaks.parquet",
        articles=f"{RESULTS}/corpus/articles.parquet",
        text=expand(
            f"{RESULTS}/text/{ENCODER}/{{section}}/embeddings.parquet",
            section=config["models"]["sections"],
        ),
    output:
        dice=f"{REPORT}/map_dice.parquet",
        summary=f"{REPORT}/map_prediction.parquet",
        markdown=report(
            f"{REPORT}/map_prediction.md",
            caption="../report/map_prediction.rst",
            category="Map prediction",
        ),
        examples=[
            report(path, caption="../report/maps.rst", category="Map prediction")
            for path in EXAMPLE_FIGURES
        ],
        maps=directory(f"{REPORT}/maps"),
    params:
        sections=config["models"]["sections"],
        fractions=EVAL["dice_top_fractions"],
        articles_per_fold=EVAL.get("map_articles_per_fold", 20),
        fwhm_mm=config["brain"]["fwhm_mm"],
        zscore=config["brain"]["zscore"],
        seed=config["folds"]["seed"],
    log:
        f"{LOGS}/report/map_prediction.log",
    benchmark:
        f"{BENCHMARKS}/report/map_prediction.tsv"
    threads: 1
    resources:
        mem_mb=8000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_maps.py"


rule report_index:
    input:
        retrieval_md=f"{REPORT}/retrieval.md",
        map_md=f"{REPORT}/map_prediction.md",
        hierarchy=f"{REPORT}/hierarchy.parquet",
        tables=[
            f"{REPORT}/retrieval.parquet",
            f"{REPORT}/retrieval_comparison.parquet",
            f"{REPORT}/map_prediction.parquet",
            f"{REPORT}/map_dice.parquet",
            f"{REPORT}/hierarchy_points.parquet",
        ],
        figures=REPORT_FIGURES,
    output:
        report(f"{REPORT}/index.md", caption="../report/index.rst", category="Index"),
    log:
        f"{LOGS}/report/index.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_index.py"
