"""Shared pytest setup for every test folder: the markers the suites use."""


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU (skipped elsewhere)")
    config.addinivalue_line("markers", "docker: starts real containers on a Docker engine (tests/e2e)")
