from mnm.io import logged_job

with logged_job(snakemake):
    from mnm.neurolip.fixture import FixtureSpec, write_fixture

    write_fixture(
        snakemake.params.root,
        FixtureSpec(**snakemake.params.spec),
        derivative=snakemake.params.derivative,
        pipeline=snakemake.params.pipeline,
        strategy=snakemake.params.strategy,
    )
