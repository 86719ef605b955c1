"""compose_gpumem.top's formats, from views as the ledger reader fills them (the e2e tests read
real ledgers of real containers)."""

from __future__ import annotations

import json

from compose_gpumem import top
from compose_gpumem.containers import labels, read_capped
from compose_gpumem.validate import parse_value

MiB = 1 << 20


def view() -> top.View:
    written = labels(parse_value("1GiB"), {"GPU-a": parse_value("1GiB")[None]}, state_dir="/run/gpumem")
    container = read_capped(
        {
            "Id": "c0ffee",
            "Name": "/proj-train-1",
            "Config": {"Labels": {**written, "com.docker.compose.project": "proj"}},
            "State": {"Status": "running", "Pid": 900},
        }
    )
    assert container is not None
    shown = top.View("proj-train-1", "/proc/900/root/run/gpumem", container, valid=True)
    shown.devices = [{"index": 0, "uuid": "GPU-a", "total": 8192 * MiB, "cap": 1024 * MiB, "used": 700 * MiB}]
    shown.devices[0]["used_pct"] = 68.4
    shown.processes = [
        {"slot": 0, "pid": 1, "host_pid": 900, "live": True, "denials": 2, "used": [700 * MiB]},
        {"slot": 1, "pid": 7, "host_pid": 950, "live": False, "denials": 1, "used": [0]},
    ]
    return shown


def test_table_has_a_row_per_container_and_gpu_with_its_holders() -> None:
    lines = top.table([view()]).splitlines()
    assert lines[0].split()[:6] == ["CONTAINER", "GPU", "CAP", "USED", "USE", "%"]
    row = lines[1].split()
    assert row[:6] == ["proj-train-1", "0", "1.0GiB", "700.0MiB", "68.4%", "3"]
    assert lines[1].endswith("1/900: 700.0MiB")


def test_json_counts_denials_of_every_process_and_names_the_container() -> None:
    (entry,) = json.loads(top.as_json([view()]))["containers"]
    assert (entry["name"], entry["project"], entry["limit"], entry["denials"]) == (
        "proj-train-1",
        "proj",
        "all=1GiB",
        3,
    )


def test_prometheus_text_has_help_type_and_dcgm_label_names() -> None:
    text = top.prometheus([view()])
    assert "# TYPE gpumem_oom_denials_total counter" in text
    assert 'gpumem_oom_denials_total{container="proj-train-1",project="proj"} 3' in text
    gpu = 'container="proj-train-1",project="proj",gpu="0",UUID="GPU-a"'
    assert f"gpumem_memory_used_bytes{{{gpu}}} {700 * MiB}" in text
    process = [line for line in text.splitlines() if line.startswith("gpumem_process_memory_used_bytes{")]
    assert process == [f'gpumem_process_memory_used_bytes{{{gpu},pid="1",host_pid="900"}} {700 * MiB}']


def test_a_label_value_is_escaped_for_the_text_format() -> None:
    assert top._labels({"container": 'a"b\\c'}) == '{container="a\\"b\\\\c"}'
