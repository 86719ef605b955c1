"""The package ships the ledger reader beside the library (`pip install .` builds both)."""

import json
import os
import subprocess

import pytest

from compose_gpumem import library


def test_the_package_ships_a_ledger_reader_that_runs(tmp_path):
    if not library.packaged().is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{library.packaged()} missing: the package was installed without its library")
        pytest.skip("compose_gpumem imported from a checkout with no built library (pip install . ships it)")
    reader = library.packaged_reader()
    done = subprocess.run([str(reader), str(tmp_path)], capture_output=True, text=True, timeout=20)
    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout)["exists"] is False
