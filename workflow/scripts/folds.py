from mnm.folds import assign_folds
from mnm.io import read_parquet, setup_logging, write_parquet

setup_logging(snakemake.log[0])
articles = read_parquet(snakemake.input.articles, columns=["article_id"])
folds = assign_folds(articles["article_id"], snakemake.params.n_folds, snakemake.params.seed)
write_parquet(folds, snakemake.output[0])
