"""Injection as pure functions: resolved services in, new services out."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from compose_gpumem.errors import InvalidValue, NoGpuRequest, Overcommit
from compose_gpumem.inject import (
    GpuRequest,
    additions,
    all_shares,
    gpu_request,
    inject_service,
    plan,
    share_groups,
)
from compose_gpumem.validate import check_overcommit

GPU_ALL = {"image": "x", "gpus": [{"count": -1}]}
LIB = "/usr/local/lib/gpumem"


def svc(**extra: Any) -> dict[str, Any]:
    return {**copy.deepcopy(GPU_ALL), **extra}


def test_every_gpu_request_form_is_recognised() -> None:
    assert gpu_request({"gpus": "all"}) == GpuRequest()
    assert gpu_request({"gpus": [{"count": -1}]}) == GpuRequest()
    assert gpu_request({"gpus": [{"device_ids": ["1", "3"]}]}) == GpuRequest(("1", "3"), 2)
    reservation = {"resources": {"reservations": {"devices": [{"capabilities": ["gpu"], "count": 2}]}}}
    assert gpu_request({"deploy": reservation}) == GpuRequest((), 2)
    assert gpu_request({"runtime": "nvidia"}) == GpuRequest()
    cdi = [{"source": "nvidia.com/gpu=1", "target": "nvidia.com/gpu=1"}, {"source": "nvidia.com/gpu=3"}]
    assert gpu_request({"devices": cdi}) == GpuRequest(("1", "3"))
    assert gpu_request({"devices": [{"source": "nvidia.com/gpu=all"}]}) == GpuRequest()
    assert gpu_request({"runtime": "nvidia", "environment": {"NVIDIA_VISIBLE_DEVICES": "2"}}) == GpuRequest(
        ("2",)
    )


def test_non_gpu_services_request_nothing() -> None:
    assert gpu_request({"image": "x"}) is None
    assert gpu_request({"runtime": "runc"}) is None
    assert gpu_request({"devices": [{"source": "/dev/fuse", "target": "/dev/fuse"}]}) is None
    other = {"resources": {"reservations": {"devices": [{"capabilities": ["tpu"]}]}}}
    assert gpu_request({"deploy": other}) is None
    assert gpu_request({"runtime": "nvidia", "environment": {"NVIDIA_VISIBLE_DEVICES": "none"}}) is None


def test_top_level_default_applies_only_to_services_requesting_a_gpu() -> None:
    plans = plan({"gpu": svc(), "cpu": {"image": "x"}}, default=0.2)
    assert set(plans) == {"gpu"}
    assert plans["gpu"].limits[None].text == "0.2"


def test_a_service_value_wins_over_the_default() -> None:
    plans = plan({"a": svc(**{"x-gpu-memory": "12GiB"})}, default=0.2)
    assert plans["a"].limits[None].text == "12GiB"


def test_x_gpu_memory_without_gpu_request_is_an_error_showing_how_to_request_one() -> None:
    with pytest.raises(NoGpuRequest, match="add `gpus: all`") as caught:
        plan({"web": {"image": "x", "x-gpu-memory": 0.3}}, file="compose.yaml")
    assert str(caught.value).startswith("compose.yaml: service 'web': x-gpu-memory 0.3: requests no GPU")


def test_per_device_index_beyond_the_requested_gpus_is_an_error() -> None:
    service = {"image": "x", "gpus": [{"device_ids": ["3"]}], "x-gpu-memory": {"0": 0.5, "1": 0.5}}
    with pytest.raises(InvalidValue, match="names device 1"):
        plan({"a": service})


def test_per_device_indexes_map_to_host_gpus_for_the_overcommit_check() -> None:
    service = {"image": "x", "gpus": [{"device_ids": ["2", "5"]}], "x-gpu-memory": {"1": 0.5}}
    shares = all_shares(plan({"a": service}))
    assert [(s.gpu, s.limit.text) for s in shares] == [("5", "0.5")]


def test_injection_adds_env_and_read_only_mount() -> None:
    p = plan({"a": svc(**{"x-gpu-memory": 0.3})})["a"]
    new = inject_service(svc(**{"x-gpu-memory": 0.3}), p, LIB)
    assert new["environment"] == {
        "GPUMEM_LIMIT": "0.3",
        "GPUMEM_STATE_DIR": "/run/gpumem",
        "LD_PRELOAD": "/opt/gpumem/libgpumem.so",
    }
    assert new["volumes"] == [
        {
            "type": "bind",
            "source": f"{LIB}/libgpumem.so",
            "target": "/opt/gpumem/libgpumem.so",
            "read_only": True,
            "bind": {"create_host_path": False},
        },
        {"type": "tmpfs", "target": "/run/gpumem"},
    ]
    assert new["labels"] == {
        "io.gpumem.enforce": "library",
        "io.gpumem.limit": "all=0.3",
        "io.gpumem.promise": "all=0.3",
        "io.gpumem.state-dir": "/run/gpumem",
        "io.gpumem.version": "1",
    }


def test_existing_ld_preload_is_kept_behind_ours() -> None:
    service = svc(environment={"LD_PRELOAD": "/usr/lib/libjemalloc.so", "OTHER": "1"})
    new = inject_service(service, plan({"a": service}, default=0.5)["a"], LIB)
    assert new["environment"]["LD_PRELOAD"] == "/opt/gpumem/libgpumem.so /usr/lib/libjemalloc.so"
    assert new["environment"]["OTHER"] == "1"


def test_per_device_mapping_sets_one_variable_per_index() -> None:
    service = {"image": "x", "gpus": [{"device_ids": ["0", "1"]}], "x-gpu-memory": {"0": 0.5, "1": "8GiB"}}
    added = additions(service, plan({"a": service})["a"], LIB)
    assert added["environment"]["GPUMEM_LIMIT_0"] == "0.5"
    assert added["environment"]["GPUMEM_LIMIT_1"] == "8GiB"
    assert "GPUMEM_LIMIT" not in added["environment"]


def test_injecting_twice_equals_injecting_once() -> None:
    service = svc(
        environment={"LD_PRELOAD": "/x.so"}, volumes=[{"type": "bind", "source": "/d", "target": "/d"}]
    )
    p = plan({"a": service}, default=0.5)["a"]
    once = inject_service(service, p, LIB)
    assert inject_service(once, p, LIB) == once


def test_other_keys_and_the_input_are_left_untouched() -> None:
    service = svc(command=["python", "train.py"], environment={"A": "1"})
    before = copy.deepcopy(service)
    new = inject_service(service, plan({"a": service}, default=0.5)["a"], LIB)
    assert service == before
    assert {k: v for k, v in new.items() if k not in ("environment", "volumes", "labels")} == {
        k: v for k, v in before.items() if k != "environment"
    }
    assert new["environment"]["A"] == "1"


def test_keys_stay_in_compose_sorted_order() -> None:
    service = {"gpus": [{"count": -1}], "image": "x", "x-gpu-memory": 0.3}
    new = inject_service(service, plan({"a": service})["a"], LIB)
    assert list(new) == ["environment", "gpus", "image", "labels", "volumes", "x-gpu-memory"]


def test_services_of_different_profiles_are_not_counted_together() -> None:
    services = {
        "train": svc(profiles=["train"], **{"x-gpu-memory": 0.8}),
        "serve": svc(profiles=["serve"], **{"x-gpu-memory": 0.8}),
        "always": svc(**{"x-gpu-memory": 0.1}),
    }
    groups = share_groups(plan(services))
    assert sorted(sorted(s.service for s in group) for group in groups) == [
        ["always"],
        ["always", "serve"],
        ["always", "train"],
    ]


def test_every_container_keeps_its_ledger_on_a_tmpfs_of_its_own_whatever_its_ipc() -> None:
    plans = plan(
        {"a": svc(ipc="host"), "b": svc(ipc="service:a"), "c": svc(), "d": svc(ipc="shareable")}, default=0.2
    )
    for p in plans.values():
        added = additions({}, p, LIB)
        assert added["environment"]["GPUMEM_STATE_DIR"] == "/run/gpumem"
        assert {"type": "tmpfs", "target": "/run/gpumem"} in added["volumes"]


def test_existing_labels_are_kept_and_ours_added() -> None:
    service = svc(labels={"team": "ml"}, **{"x-gpu-memory": "8GiB"})
    new = inject_service(service, plan({"a": service})["a"], LIB)
    assert new["labels"]["team"] == "ml"
    assert new["labels"]["io.gpumem.promise"] == "all=8GiB"


def test_replicas_count_each_container_and_are_named_in_the_overcommit_check() -> None:
    for extra in ({"deploy": {"replicas": 2}}, {"scale": 2}):
        plans = plan({"trainer": svc(**extra, **{"x-gpu-memory": 0.6})})
        assert [s.service for s in all_shares(plans)] == ["trainer-1", "trainer-2"]
        with pytest.raises(Overcommit, match=r"120% .*trainer-1=0\.6, trainer-2=0\.6"):
            check_overcommit(all_shares(plans))
