"""Fixtures for the libgpumem tests: everything is built once per session into tests/.build/."""

import shutil

import pytest
from libgpumem_support import Gpu, build_all


@pytest.fixture(scope="session")
def built():
    out, paths = build_all()
    yield paths
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def gpu(built, tmp_path):
    return Gpu(built, tmp_path)
