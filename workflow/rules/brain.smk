# Stage 3: brain features. Atlas maps on the analysis grid, then per-article least-squares
# coefficients of the peaks' Gaussian KDE on those maps (fast lookup path, see mnm.brain),
# plus KDE maps and a glass-brain PNG of a few articles for visual QC, and (only when a
# voxel-map model such as text2brain is trained) every article's KDE map on the 4 mm grid.

BRAIN = config["brain"]
N_QC_MAPS = BRAIN["n_qc_maps"]
# Targets of this stage, for every configured atlas.
BRAIN_TARGETS = expand(
    [f"{RESULTS}/brain/{{atlas}}/coefficients.parquet", f"{RESULTS}/brain/{{atlas}}/qc/glass_brain.png"],
    atlas=ATLASES,
)


rule atlas:
    output:
        atlas=f"{RESULTS}/atlas/{{atlas}}/atlas.nii.gz",
        components=f"{RESULTS}/atlas/{{atlas}}/components.parquet",
    params:
        name=lambda wildcards: wildcards.atlas,
        resources_dir=RESOURCES,
        resolution_mm=config["atlas"]["resolution_mm"],
    log:
        f"{LOGS}/atlas/{{atlas}}.log",
    benchmark:
        f"{BENCHMARKS}/atlas/{{atlas}}.tsv"
    threads: 1
    resources:
        **job_resources("atlas"),
        **slurm(),
    conda:
        "../../envs/brain.yaml"
    script:
        "../scripts/atlas.py"


rule coefficients:
    input:
        atlas=f"{RESULTS}/atlas/{{atlas}}/atlas.nii.gz",
        peaks=f"{RESULTS}/corpus/peaks.parquet",
        articles=f"{RESULTS}/corpus/articles.parquet",
    output:
        f"{RESULTS}/brain/{{atlas}}/coefficients.parquet",
    params:
        fwhm_mm=BRAIN["fwhm_mm"],
        zscore=BRAIN["zscore"],
        delta=BRAIN["delta"],
        drop_duplicate_peaks=BRAIN["drop_duplicate_peaks"],
    log:
        f"{LOGS}/brain/{{atlas}}/coefficients.log",
    benchmark:
        f"{BENCHMARKS}/brain/{{atlas}}/coefficients.tsv"
    threads: 2
    resources:
        **job_resources("coefficients"),
        **slurm(),
    conda:
        "../../envs/brain.yaml"
    script:
        "../scripts/coefficients.py"


rule kde_maps:
    input:
        atlas=f"{RESULTS}/atlas/{{atlas}}/atlas.nii.gz",
        peaks=f"{RESULTS}/corpus/peaks.parquet",
        articles=f"{RESULTS}/corpus/articles.parquet",
    output:
        maps=f"{RESULTS}/brain/{{atlas}}/kde_4mm/maps.parquet",
        mask=f"{RESULTS}/brain/{{atlas}}/kde_4mm/mask.nii.gz",
    params:
        fwhm_mm=BRAIN["fwhm_mm"],
        drop_duplicate_peaks=BRAIN["drop_duplicate_peaks"],
    log:
        f"{LOGS}/brain/{{atlas}}/kde_4mm.log",
    benchmark:
        f"{BENCHMARKS}/brain/{{atlas}}/kde_4mm.tsv"
    threads: 1
    resources:
        mem_mb=8000,
    conda:
        "../../envs/brain.yaml"
    script:
        "../scripts/kde_maps.py"


rule brain_qc:
    input:
        atlas=f"{RESULTS}/atlas/{{atlas}}/atlas.nii.gz",
        peaks=f"{RESULTS}/corpus/peaks.parquet",
    output:
        png=f"{RESULTS}/brain/{{atlas}}/qc/glass_brain.png",
        maps=[f"{RESULTS}/brain/{{atlas}}/qc/kde_{i}.nii.gz" for i in range(N_QC_MAPS)],
    params:
        qc_dir=lambda wildcards: f"{RESULTS}/brain/{wildcards.atlas}/qc",
        fwhm_mm=BRAIN["fwhm_mm"],
        n_maps=N_QC_MAPS,
    log:
        f"{LOGS}/brain/{{atlas}}/qc.log",
    benchmark:
        f"{BENCHMARKS}/brain/{{atlas}}/qc.tsv"
    # One core: the QC maps and the figure are serial (15 CPU s in 15 s at 20,000 articles).
    threads: 1
    resources:
        **job_resources("brain_qc"),
        **slurm(),
    conda:
        "../../envs/brain.yaml"
    script:
        "../scripts/brain_qc.py"
