"""Test-only start-up hook: point pubget at the tests' loopback E-utilities server.

tests/test_pubget_download.py puts this folder first on PYTHONPATH and sets
MNM_TEST_EUTILS_URL for the Snakemake run it starts, so that the corpus job's Python process
(a subprocess of Snakemake) downloads from 127.0.0.1 instead of NCBI. Without the variable
this module does nothing.
"""

import os
import sys

if os.environ.get("MNM_TEST_EUTILS_URL"):
    sys.path.insert(0, os.environ["MNM_TEST_EUTILS_TESTS_DIR"])
    from eutils_server import point_pubget_at

    point_pubget_at(os.environ["MNM_TEST_EUTILS_URL"])
