from mnm.io import setup_logging

setup_logging(snakemake.log[0])
from mnm.neurolip.fixture import FixtureSpec, write_fixture

write_fixture(
    snakemake.params.root,
    FixtureSpec(**snakemake.params.spec),
    derivative=snakemake.params.derivative,
    pipeline=snakemake.params.pipeline,
    strategy=snakemake.params.strategy,
)
