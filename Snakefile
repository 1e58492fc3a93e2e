# MNM pipeline: PubMed Central articles -> text and brain features -> hyperbolic
# brain-text models per fold -> evaluation report. Run: snakemake --cores all
# (profiles/default is loaded automatically; see README.md for the paper-scale run).


from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/brain.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/neurolip.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/corpus/qc.parquet",
        f"{RESULTS}/folds.parquet",
        BRAIN_TARGETS,
        TEXT_EMBEDDINGS,
        MODEL_OUTPUTS,
        f"{RESULTS}/report/index.md",
