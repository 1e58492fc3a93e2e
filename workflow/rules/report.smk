# Stage 5: evaluation and report. Per-fold metrics with controls and Table 1 with paired
# comparisons, the hierarchy/geometry analysis, the lambda_hier x radius-head trade-off,
# multi-level map prediction, the Poincare disk, figures and report/index.md (the target of
# rule all). Logic lives in mnm.report; inputs come from the path helpers of common.smk.
EVAL = config["evaluation"]
REPORT = f"{RESULTS}/report"
FIGURES = f"{REPORT}/figures"
ATLAS_DIR = f"{RESULTS}/atlas/{ATLAS}"
COEFFICIENTS = f"{RESULTS}/brain/{ATLAS}/coefficients.parquet"

HYPERBOLIC_MODELS = [m for m in MODELS if m in MNM_VARIANTS]
# Fold-all models drawn on the Poincare disk: MNM with and without the hierarchy loss.
POINCARE_MODELS = [m for m in ("mnm", "mnm_no_hier") if m in MODELS] or HYPERBOLIC_MODELS[:1]
EXAMPLE_FIGURES = [f"{FIGURES}/map_example_{i}.png" for i in range(EVAL["n_example_maps"])]
HAS_TRADEOFF = bool(TRADEOFF_POINTS)
REPORT_FIGURES = (
    [f"{FIGURES}/recall.png", f"{FIGURES}/hierarchy_radius_vs_n_active.png", f"{FIGURES}/radii.png"]
    + ([f"{FIGURES}/tradeoff.png"] if HAS_TRADEOFF else [])
    + ([f"{FIGURES}/poincare_disk.png"] if POINCARE_MODELS else [])
    + EXAMPLE_FIGURES
)

localrules: retrieval_table, recall_figure, hierarchy, tradeoff, map_prediction, report_index


rule retrieval_table:
    input:
        cv_outputs("test_embeddings.parquet"),
    output:
        metrics=cv_outputs("metrics.parquet"),
        table=f"{REPORT}/retrieval.parquet",
        markdown=report(f"{REPORT}/retrieval.md", caption="../report/retrieval.rst", category="Retrieval"),
        comparison=f"{REPORT}/retrieval_comparison.parquet",
    params:
        ks=EVAL["recall_k"],
        models_order=MODELS,
        seed=config["folds"]["seed"],
    # Starts as soon as the last fold is trained, before the map and trade-off jobs (see
    # train_model's priority).
    priority: 1
    log:
        f"{LOGS}/report/retrieval_table.log",
    benchmark:
        f"{BENCHMARKS}/report/retrieval_table.tsv"
    # 4.2 GB measured at 20,000 articles (Text2Brain's 4-mm maps of a 2,000-article test fold,
    # scored in float64; benchmarks/scale.md)
    resources:
        mem_mb=5000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_retrieval.py"


rule recall_figure:
    input:
        f"{REPORT}/retrieval.parquet",
    output:
        report(f"{FIGURES}/recall.png", caption="../report/recall.rst", category="Retrieval"),
    params:
        models_order=MODELS,
    log:
        f"{LOGS}/report/recall_figure.log",
    benchmark:
        f"{BENCHMARKS}/report/recall_figure.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_figures.py"


rule hierarchy:
    input:
        test_embeddings=cv_outputs("test_embeddings.parquet", models=HYPERBOLIC_MODELS),
    output:
        table=f"{REPORT}/hierarchy.parquet",
        geometry=f"{REPORT}/geometry.parquet",
        points=f"{REPORT}/hierarchy_points.parquet",
        figure=report(f"{FIGURES}/hierarchy_radius_vs_n_active.png", caption="../report/hierarchy.rst",
                      category="Hierarchy"),
        radii=report(f"{FIGURES}/radii.png", caption="../report/radii.rst", category="Hierarchy"),
    log:
        f"{LOGS}/report/hierarchy.log",
    benchmark:
        f"{BENCHMARKS}/report/hierarchy.tsv"
    resources:
        mem_mb=4000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_hierarchy.py"


rule tradeoff:
    input:
        test=tradeoff_outputs("test_embeddings.parquet"),
        validation=tradeoff_outputs("validation_embeddings.parquet"),
        baseline=cv_outputs("metrics.parquet", models=["neurocontext"], sections=[TRADEOFF["section"]],
                            repeats=["0"], atlases=[ATLAS]) if "neurocontext" in MODELS else [],
    output:
        points=f"{REPORT}/tradeoff.parquet",
        selection=f"{REPORT}/tradeoff_selection.parquet",
        markdown=report(f"{REPORT}/tradeoff.md", caption="../report/tradeoff.rst", category="Hierarchy"),
        figure=report(f"{FIGURES}/tradeoff.png", caption="../report/tradeoff.rst", category="Hierarchy"),
    params:
        section=TRADEOFF["section"],
        configured_lambda=config["models"]["mnm"]["lambda_hier"],
        max_tau=TRADEOFF["max_tau"],
        metric=TRADEOFF["metric"],
    log:
        f"{LOGS}/report/tradeoff.log",
    benchmark:
        f"{BENCHMARKS}/report/tradeoff.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_tradeoff.py"


rule poincare:
    input:
        models=all_outputs(OUTPUT_FILES["model"], models=POINCARE_MODELS, sections=[SECTIONS[0]], atlases=[ATLAS]),
        atlas=f"{ATLAS_DIR}/atlas.nii.gz",
        components=f"{ATLAS_DIR}/components.parquet",
        coefficients=COEFFICIENTS,
    output:
        report(f"{FIGURES}/poincare_disk.png", caption="../report/poincare.rst", category="Hierarchy"),
    params:
        labels=POINCARE_MODELS,
        fwhm_mm=config["brain"]["fwhm_mm"],
        zscore=config["brain"]["zscore"],
    log:
        f"{LOGS}/report/poincare.log",
    benchmark:
        f"{BENCHMARKS}/report/poincare.tsv"
    resources:
        **job_resources("poincare"),
        **slurm(),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_poincare.py"


MAP_PARAMS = dict(
    sections=SECTIONS,
    fwhm_mm=config["brain"]["fwhm_mm"],
    zscore=config["brain"]["zscore"],
    seed=config["folds"]["seed"],
)
EXAMPLE_MODEL = "mnm" if "mnm" in MODELS else MODELS[0]


# One job per (atlas, model), so that the map evaluations run side by side; repeat 0.
rule map_dice:
    input:
        **map_inputs("{atlas}"),
        models=lambda wildcards: cv_outputs(OUTPUT_FILES["model"], models=[wildcards.model], repeats=["0"],
                                            atlases=[wildcards.atlas]),
        test_embeddings=lambda wildcards: cv_outputs("test_embeddings.parquet", models=[wildcards.model],
                                                     repeats=["0"], atlases=[wildcards.atlas]),
    output:
        f"{REPORT}/map_dice/{{atlas}}/{{model}}.parquet",
    params:
        **MAP_PARAMS,
        fractions=EVAL["dice_top_fractions"],
        articles_per_fold=EVAL["map_articles_per_fold"],
    log:
        f"{LOGS}/report/map_dice/{{atlas}}/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/report/map_dice/{{atlas}}/{{model}}.tsv"
    threads: 1
    resources:
        **job_resources("map_dice"),
        **slurm(),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_map_dice.py"


rule map_prediction:
    input:
        expand(f"{REPORT}/map_dice/{{atlas}}/{{model}}.parquet", atlas=ATLASES, model=MODELS),
    output:
        dice=f"{REPORT}/map_dice.parquet",
        summary=f"{REPORT}/map_prediction.parquet",
        markdown=report(f"{REPORT}/map_prediction.md", caption="../report/map_prediction.rst",
                        category="Map prediction"),
    params:
        fractions=EVAL["dice_top_fractions"],
    log:
        f"{LOGS}/report/map_prediction.log",
    benchmark:
        f"{BENCHMARKS}/report/map_prediction.tsv"
    resources:
        mem_mb=2000,
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_map_summary.py"


rule map_examples:
    input:
        **map_inputs(ATLAS),
        model=cv_outputs(OUTPUT_FILES["model"], models=[EXAMPLE_MODEL], sections=SECTIONS[-1:], repeats=["0"],
                         folds=FOLDS[:1], atlases=[ATLAS]),
        test_embeddings=cv_outputs("test_embeddings.parquet", models=[EXAMPLE_MODEL], sections=SECTIONS[-1:],
                                   repeats=["0"], folds=FOLDS[:1], atlases=[ATLAS]),
    output:
        examples=[report(path, caption="../report/maps.rst", category="Map prediction") for path in EXAMPLE_FIGURES],
        maps=directory(f"{REPORT}/maps"),
    params:
        **MAP_PARAMS,
    log:
        f"{LOGS}/report/map_examples.log",
    benchmark:
        f"{BENCHMARKS}/report/map_examples.tsv"
    resources:
        **job_resources("map_examples"),
        **slurm(),
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_map_examples.py"


rule report_index:
    input:
        retrieval_md=f"{REPORT}/retrieval.md",
        map_md=f"{REPORT}/map_prediction.md",
        tradeoff_md=[f"{REPORT}/tradeoff.md"] if HAS_TRADEOFF else [],
        hierarchy=f"{REPORT}/hierarchy.parquet",
        geometry=f"{REPORT}/geometry.parquet",
        examples=EXAMPLE_FIGURES,
        tables=[
            f"{REPORT}/retrieval.parquet",
            f"{REPORT}/retrieval_comparison.parquet",
            f"{REPORT}/map_prediction.parquet",
            f"{REPORT}/map_dice.parquet",
            f"{REPORT}/hierarchy_points.parquet",
        ] + ([f"{REPORT}/tradeoff.parquet", f"{REPORT}/tradeoff_selection.parquet"] if HAS_TRADEOFF else []),
        figures=REPORT_FIGURES,
    output:
        report(f"{REPORT}/index.md", caption="../report/index.rst", category="Index"),
    log:
        f"{LOGS}/report/index.log",
    benchmark:
        f"{BENCHMARKS}/report/report_index.tsv"
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/report_index.py"
