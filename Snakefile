# MNM pipeline: PubMed Central articles -> text and brain features -> hyperbolic
# brain-text models per fold -> evaluation report. Run: snakemake --cores all
# (profiles/default is loaded automatically; see README.md for the paper-scale run).
from pathlib import Path


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"


for _stage in ["brain", "text", "models", "report"]:
    if Path(f"workflow/rules/{_stage}.smk").exists():

        include: f"workflow/rules/{_stage}.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/corpus/articles.parquet",
        f"{RESULTS}/folds.parquet",
