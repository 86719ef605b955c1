"""Splicing the injection into Compose's text gives the same document as injecting into the
whole parsed document, and copies every other service through byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from unit_helpers import write

from compose_gpumem.project import from_text
from compose_gpumem.yamlio import load

STACK = """\
x-gpu-memory: 0.1
services:
  plain:
    image: x
    gpus: all
  with-env-and-volumes:
    image: x
    gpus: all
    environment: {A: "1", LD_PRELOAD: /a.so}
    volumes: ["./d:/d", "/var/run:/run:ro"]
    command: |
      line one
        indented: line

      after a blank line
  already-mounted:
    image: x
    runtime: nvidia
    volumes:
      - type: bind
        source: /old/place
        target: /opt/gpumem
  reserved:
    image: x
    deploy:
      resources:
        limits: {memory: 1g}
        reservations:
          devices: [{capabilities: [gpu], device_ids: ["1"]}]
    x-gpu-memory: {"0": 8GiB}
  cpu-only:
    image: x
    environment: [LD_PRELOAD=/b.so, "PRICE=$$5"]
"""


@pytest.fixture
def resolved(tmp_path: Path, compose_cmd: list[str]) -> str:
    write(tmp_path / "compose.yaml", STACK)
    return subprocess.run(
        [*compose_cmd, "config"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout


def test_spliced_yaml_equals_the_whole_document_injected(resolved: str) -> None:
    project = from_text(resolved)
    assert set(project.plans) == {"plain", "with-env-and-volumes", "already-mounted", "reserved"}
    spliced = project.injected_yaml("/lib")
    assert load(spliced) == project.injected_document("/lib")


def test_untouched_services_are_copied_byte_for_byte(resolved: str) -> None:
    spliced = from_text(resolved).injected_yaml("/lib")
    block = resolved[resolved.index("  cpu-only:") : resolved.index("  plain:")]
    assert block in spliced


def test_an_existing_mount_at_opt_gpumem_is_replaced_not_doubled(resolved: str) -> None:
    volumes = load(from_text(resolved).injected_yaml("/lib"))["services"]["already-mounted"]["volumes"]
    assert [v.get("source") for v in volumes] == ["/lib/libgpumem.so", None]


def test_a_dollar_in_the_library_directory_is_escaped_for_compose(resolved: str) -> None:
    spliced = from_text(resolved).injected_yaml("/srv/$HOME/lib")
    assert load(spliced)["services"]["plain"]["volumes"][0]["source"] == "/srv/$$HOME/lib/libgpumem.so"
