# NeuroLIP branch: subject connectomes <-> phenotype texts (TTCA, CALT, fairness losses),
# per-fold training of the full model and its ablations, a connectivity + logistic model
# baseline, and a report page. Not part of `rule all` (about 8 minutes of CPU time on the
# generated fixture, 20 training jobs; docs/neurolip.md); run it with
#   snakemake --cores all neurolip
# Logic lives in mnm.neurolip; see docs/neurolip.md.
from pathlib import Path

from mnm.neurolip.fetch import config_strategy
from mnm.neurolip.fixture import PHENOTYPIC_FILE
from mnm.neurolip.rois import default_atlas

NL = config["neurolip"]
NL_DATASET = NL["dataset"]
NL_DIR = f"{RESULTS}/neurolip/{NL_DATASET}"
NL_REPORT = f"{RESULTS}/report/neurolip"
NL_LOGS = f"{LOGS}/neurolip/{NL_DATASET}"
NL_BENCHMARKS = f"{BENCHMARKS}/neurolip/{NL_DATASET}"
NL_FOLDS = [str(f) for f in range(NL["n_folds"])]
# The GENERATED fixture lives with the results (it is generated, never a cached download).
NL_FIXTURE = f"{RESULTS}/neurolip/generated_fixture"
NL_STRATEGY = config_strategy(NL["abide"])
NL_FIXTURE_PHENOTYPIC = f"{NL_FIXTURE}/ABIDE_pcp/{PHENOTYPIC_FILE}"
# nilearn data folder of real downloads (the fixture's is its own root).
NL_DOWNLOADS = NL["data_dir"] or f"{RESOURCES}/neurolip"


# (label image, names csv) painting the ROI columns, or (None, None); see mnm.neurolip.rois.
NL_ATLAS_IMAGE, NL_ATLAS_NAMES = default_atlas(
    NL_DATASET, NL["atlas_image"], NL["atlas_names"], NL_FIXTURE
)
NL_DATA_FILES = ["subjects", "connectivity", "regions", "folds", "planted"]
NL_TEXT_FILES = ["texts", "subject_texts", "tokens"]
NL_FOLD_FILES = ["model.safetensors", "history.parquet", "predictions.parquet", "metrics.parquet",
                 "attention.parquet"]


wildcard_constraints:
    nl_variant="|".join(NL["variants"]),
    nl_fold="[0-9]+",


localrules:
    neurolip,
    neurolip_fixture,


rule neurolip:
    input:
        f"{NL_REPORT}/neurolip.md",


rule neurolip_fixture:
    output:
        phenotypic=NL_FIXTURE_PHENOTYPIC,
    params:
        root=lambda wildcards, output: str(Path(output.phenotypic).parents[1]),
        spec=NL["generated"],
        derivative=NL["abide"]["derivative"],
        pipeline=NL["abide"]["pipeline"],
        strategy=NL_STRATEGY,
    log:
        f"{LOGS}/neurolip/generated_fixture.log",
    conda:
        "../../envs/neurolip.yaml"
    script:
        "../scripts/neurolip_fixture.py"


rule neurolip_data:
    input:
        fixture=NL_FIXTURE_PHENOTYPIC if NL_DATASET == "generated" else [],
    output:
        **{name: f"{NL_DIR}/{name}.parquet" for name in NL_DATA_FILES},
    params:
        dataset=NL_DATASET,
        data_dir=lambda wildcards, input: (
            str(Path(input.fixture).parents[1]) if input.fixture else NL_DOWNLOADS
        ),
        abide=NL["abide"],
        adhd=NL["adhd"],
        atlas_image=NL_ATLAS_IMAGE,
        atlas_names=NL_ATLAS_NAMES,
        kind=NL["connectivity"],
        n_folds=NL["n_folds"],
        seed=NL["seed"],
    log:
        f"{NL_LOGS}/data.log",
    benchmark:
        f"{NL_BENCHMARKS}/data.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        **slurm(),
    conda:
        "../../envs/neurolip.yaml"
    script:
        "../scripts/neurolip_data.py"


rule neurolip_texts:
    input:
        subjects=f"{NL_DIR}/subjects.parquet",
    output:
        **{name: f"{NL_DIR}/{name}.parquet" for name in NL_TEXT_FILES},
    params:
        dataset=NL_DATASET,
        # functions: the templates' {slots} are not wildcards
        templates=lambda wildcards: NL["text"]["templates"],
        prompt_template=lambda wildcards: NL["text"]["prompt_template"],
        encoder_cfg=config["text"]["encoders"][ENCODER],
        device=config["text"]["device"],
    log:
        f"{NL_LOGS}/texts.log",
    benchmark:
        f"{NL_BENCHMARKS}/texts.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        gpu=1 if TEXT_ON_GPU else 0,
        **slurm(TEXT_ON_GPU),
    conda:
        "../../envs/neurolip.yaml"
    script:
        "../scripts/neurolip_texts.py"


rule neurolip_train:
    input:
        **{name: f"{NL_DIR}/{name}.parquet" for name in NL_DATA_FILES + NL_TEXT_FILES},
    output:
        **{
            name.split(".")[0]: f"{NL_DIR}/{{nl_variant}}/fold-{{nl_fold}}/{name}"
            for name in NL_FOLD_FILES
        },
    params:
        model=NL["model"],
        loss=NL["loss"],
        sensitive=NL["sensitive"],
        seed=NL["seed"],
        validation_fraction=NL["validation_fraction"],
        probe_C=NL["probe_C"],
    log:
        f"{NL_LOGS}/{{nl_variant}}/fold-{{nl_fold}}.log",
    benchmark:
        f"{NL_BENCHMARKS}/{{nl_variant}}/fold-{{nl_fold}}.tsv"
    threads: NL["threads"]
    resources:
        mem_mb=4000,
        **slurm(),
    conda:
        "../../envs/neurolip.yaml"
    script:
        "../scripts/neurolip_train.py"


rule neurolip_baseline:
    input:
        **{name: f"{NL_DIR}/{name}.parquet" for name in NL_DATA_FILES},
    output:
        predictions=f"{NL_DIR}/baseline_logreg/fold-{{nl_fold}}/predictions.parquet",
        metrics=f"{NL_DIR}/baseline_logreg/fold-{{nl_fold}}/metrics.parquet",
    params:
        C=NL["baseline_C"],
        sensitive=NL["sensitive"],
        seed=NL["seed"],
    log:
        f"{NL_LOGS}/baseline_logreg/fold-{{nl_fold}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        **slurm(),
    conda:
        "../../envs/neurolip.yaml"
    script:
        "../scripts/neurolip_baseline.py"


rule neurolip_report:
    input:
        metrics=expand(
            f"{NL_DIR}/{{variant}}/fold-{{fold}}/metrics.parquet",
            variant=[*NL["variants"], "baseline_logreg"],
            fold=NL_FOLDS,
        ),
        attention=expand(
            f"{NL_DIR}/{{variant}}/fold-{{fold}}/attention.parquet",
            variant=NL["variants"],
            fold=NL_FOLDS,
        ),
    output:
        page=report(
            f"{NL_REPORT}/neurolip.md",
            caption="../report/neurolip.rst",
            category="NeuroLIP",
        ),
        summary=f"{NL_REPORT}/summary.parquet",
        attention=f"{NL_REPORT}/attention.parquet",
        compare=f"{NL_REPORT}/mnm_correlation.parquet",
        maps=directory(f"{NL_REPORT}/maps"),
    params:
        dataset=NL_DATASET,
        atlas_image=NL_ATLAS_IMAGE,
        atlas_names=NL_ATLAS_NAMES,
        compare=NL["compare"],
    log:
        f"{NL_LOGS}/report.log",
    threads: 1
    resources:
        mem_mb=8000,
        **slurm(),
    conda:
        "../../envs/neurolip.yaml"
    script:
        "../scripts/neurolip_report.py"
