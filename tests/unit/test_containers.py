"""compose_gpumem.containers: the labels written on a capped container read back the same, and
`docker inspect` entries sort into capped containers and uncapped GPU users.

The inspect entries are the fields the engine prints (Docker 20.10 names); the e2e tests read
the same from real containers."""

from __future__ import annotations

from typing import Any

from compose_gpumem import containers
from compose_gpumem.containers import GpuNames, labels, promise, read_capped, sort
from compose_gpumem.validate import parse_value


def entry(
    name: str, label: dict[str, str], host: dict[str, Any] | None = None, **state: Any
) -> dict[str, Any]:
    return {
        "Id": f"{name}-id",
        "Name": f"/{name}",
        "Config": {"Labels": label, "Env": state.pop("env", [])},
        "State": {"Status": state.get("status", "running"), "Pid": state.get("pid", 4242)},
        "HostConfig": host or {},
    }


def test_labels_read_back_as_the_promise_and_form_they_were_written_with() -> None:
    limits = parse_value({"0": 0.5, "1": "8GiB"})
    promised = promise([("3", limits[0]), ("5", limits[1])], GpuNames({"3": "GPU-c"}))
    written = labels(limits, promised, state_dir="/run/gpumem")
    assert written[containers.PROMISE] == "5=8GiB,GPU-c=0.5"
    assert written[containers.LIMIT] == "0=0.5,1=8GiB"
    found = read_capped(entry("job", {**written, "com.docker.compose.project": "p"}, pid=77))
    assert found is not None and not found.problem
    assert {gpu: limit.text for gpu, limit in found.promise.items()} == {"GPU-c": "0.5", "5": "8GiB"}
    assert found.promise["5"].size == 8 << 30 and found.promise["GPU-c"].fraction == 0.5
    assert {index: limit.text for index, limit in found.limit.items()} == {"0": "0.5", "1": "8GiB"}
    assert (found.name, found.project, found.enforce) == ("job", "p", "library")
    assert found.ledger_dir == "/proc/77/root/run/gpumem"


def test_every_gpu_is_spread_over_the_uuids_nvml_lists_and_kept_as_all_without_nvml() -> None:
    limit = parse_value(0.3)[None]
    assert list(promise([("*", limit)], GpuNames({"0": "GPU-a", "1": "GPU-b"}))) == ["GPU-a", "GPU-b"]
    assert list(promise([("*", limit)], GpuNames())) == ["all"]


def test_a_stopped_container_has_no_ledger_to_read() -> None:
    written = labels(parse_value(0.3), {"all": parse_value(0.3)[None]}, state_dir="/run/gpumem")
    found = read_capped(entry("old", written, status="exited", pid=0))
    assert found is not None and not found.running and found.ledger_dir == ""


def test_damaged_labels_are_reported_not_trusted() -> None:
    written = labels(parse_value(0.3), {"all": parse_value(0.3)[None]}, state_dir="/run/gpumem")
    for key, bad in ((containers.PROMISE, "GPU-a"), (containers.PROMISE, "0=1.5"), (containers.VERSION, "9")):
        found = read_capped(entry("odd", {**written, key: bad}))
        assert found is not None and found.problem.startswith("labels unreadable"), (key, bad)


def test_gpu_users_without_a_cap_are_found_by_every_way_of_asking_for_a_gpu() -> None:
    described = [
        entry("plain", {}),
        entry("all", {}, {"DeviceRequests": [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]}),
        entry(
            "two", {}, {"DeviceRequests": [{"Count": 0, "DeviceIDs": ["1", "2"], "Capabilities": [["gpu"]]}]}
        ),
        entry("cdi", {}, {"DeviceRequests": [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=0"]}]}),
        entry("rt", {}, {"Runtime": "nvidia"}, env=["NVIDIA_VISIBLE_DEVICES=3"]),
        entry("rt-none", {}, {"Runtime": "nvidia"}, env=["NVIDIA_VISIBLE_DEVICES=void"]),
    ]
    found = sort(described)
    assert found.capped == ()
    assert {u.name: u.gpus for u in found.uncapped} == {
        "all": ("all",),
        "two": ("1", "2"),
        "cdi": ("0",),
        "rt": ("3",),
    }
