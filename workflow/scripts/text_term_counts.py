from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.text.term_counts import count_section_terms

    count_section_terms(snakemake.input.articles, snakemake.wildcards.section, snakemake.output[0])
