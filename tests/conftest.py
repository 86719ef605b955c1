"""Shared pytest setup for every test folder: the markers the suites use, and the host's GPUs as
they are outside tests/e2e."""

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU (skipped elsewhere)")
    config.addinivalue_line("markers", "docker: starts real containers on a Docker engine (tests/e2e)")


@pytest.fixture(autouse=True)
def _host_gpus_as_they_are(request, monkeypatch):
    """Outside tests/e2e, NVML is the host's own: the e2e session's stand-in (GPUMEM_NVML_LIBRARY,
    set for the rest of the session once an e2e test has run) is not read, and no facts read
    under it are kept."""
    if "e2e" in request.node.path.parts:
        yield
        return
    from compose_gpumem import hostfacts

    monkeypatch.delenv(hostfacts.ENV_NVML, raising=False)
    hostfacts.forget()
    yield
    hostfacts.forget()
