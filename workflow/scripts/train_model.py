from mnm.io import setup_logging

setup_logging(snakemake.log[0])
from mnm.train import train_fold_from_snakemake  # noqa: E402

train_fold_from_snakemake(snakemake)
