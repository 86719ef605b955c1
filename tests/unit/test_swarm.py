"""The Swarm stack file: every key Swarm rejects or ignores is translated or refused, and the cap
travels as environment plus a config holding the library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from unit_helpers import cli, write

from compose_gpumem import swarm
from compose_gpumem.errors import GpumemError, InvalidValue, Overcommit
from compose_gpumem.yamlio import load

LIBRARY = ("/usr/lib/gpumem/libgpumem.so", b"\x7fELF stand-in")


def stack(services: dict[str, Any], **top: Any) -> swarm.Stack:
    return swarm.translate({"name": "proj", "services": services, **top}, library=LIBRARY, file="c.yaml")


def gpu(**extra: Any) -> dict[str, Any]:
    """A service as Compose prints `gpus: [{count: 1}]`."""
    return {"image": "img", "gpus": [{"count": 1}], **extra}


def generic(service: dict[str, Any]) -> list[Any]:
    return service["deploy"]["resources"]["reservations"]["generic_resources"]


def refused(services: dict[str, Any]) -> str:
    with pytest.raises(swarm.SwarmUnsupported) as caught:
        stack(services)
    return str(caught.value)


# ---------------------------------------------------------------------------- the GPU request


@pytest.mark.parametrize(
    "service",
    [
        {"image": "img", "gpus": [{"count": 2}]},
        {
            "image": "img",
            "deploy": {"resources": {"reservations": {"devices": [{"capabilities": ["gpu"], "count": 2}]}}},
        },
    ],
    ids=["gpus", "device-reservation"],
)
def test_gpu_request_becomes_a_generic_resource(service: dict[str, Any]) -> None:
    out = stack({"t": {**service, "x-gpu-memory": 0.25}}).document["services"]["t"]
    assert generic(out) == [{"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": 2}}]
    assert "gpus" not in out and "devices" not in out
    assert "devices" not in out["deploy"]["resources"]["reservations"]


def test_existing_generic_gpu_resource_counts_as_the_request() -> None:
    reservations = {"generic_resources": [{"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": 1}}]}
    out = stack(
        {"t": {"image": "i", "deploy": {"resources": {"reservations": reservations}}, "x-gpu-memory": "30%"}}
    )
    assert out.document["services"]["t"]["environment"]["GPUMEM_LIMIT"] == "30%"
    assert generic(out.document["services"]["t"]) == reservations["generic_resources"]


def test_fraction_goes_to_the_task_as_written_to_resolve_on_its_gpu() -> None:
    out = stack({"t": gpu(**{"x-gpu-memory": 0.3})}, **{"x-gpu-memory": "12GiB"}).document
    env = out["services"]["t"]["environment"]
    assert env["GPUMEM_LIMIT"] == "0.3"
    assert env["LD_PRELOAD"] == "/opt/gpumem/libgpumem.so"
    assert env["GPUMEM_STATE_DIR"] == "/run/gpumem"
    assert "x-gpu-memory" not in out and "x-gpu-memory" not in out["services"]["t"]


def test_each_task_keeps_its_ledger_on_a_tmpfs_of_its_own_after_its_volumes() -> None:
    mine = {"type": "volume", "source": "data", "target": "/data"}
    old_ledger = {"type": "bind", "source": "/host/shared", "target": "/run/gpumem"}
    out = stack({"t": gpu(read_only=True, volumes=[mine, old_ledger], **{"x-gpu-memory": 0.5})}).document
    service = out["services"]["t"]
    assert service["volumes"] == [mine, {"type": "tmpfs", "target": "/run/gpumem"}]
    assert service["environment"]["GPUMEM_STATE_DIR"] == "/run/gpumem" and service["read_only"] is True
    assert "volumes" not in stack({"t": gpu()}).document["services"]["t"]  # no cap: nothing added


def test_top_level_default_caps_every_gpu_service() -> None:
    out = stack({"t": gpu(), "db": {"image": "pg"}}, **{"x-gpu-memory": "40%"}).document["services"]
    assert out["t"]["environment"]["GPUMEM_LIMIT"] == "40%"
    assert "environment" not in out["db"] and "configs" not in out["db"]


def test_existing_ld_preload_is_kept() -> None:
    out = stack({"t": gpu(environment={"LD_PRELOAD": "/x.so"}, **{"x-gpu-memory": 0.5})}).document
    assert out["services"]["t"]["environment"]["LD_PRELOAD"] == "/opt/gpumem/libgpumem.so /x.so"


def test_library_travels_as_a_config_named_by_its_hash_mode_0555() -> None:
    out = stack({"t": gpu(**{"x-gpu-memory": 0.5})}).document
    config = out["configs"]["gpumem-lib"]
    assert config["file"] == LIBRARY[0]
    other = swarm.library_config_name(b"another build")
    assert config["name"].startswith("gpumem-lib-") and config["name"] != other
    assert out["services"]["t"]["configs"] == [
        {"source": "gpumem-lib", "target": "/opt/gpumem/libgpumem.so", "uid": "0", "gid": "0", "mode": 0o555}
    ]


def test_no_cap_no_library_config() -> None:
    assert "configs" not in stack({"t": gpu()}).document


def test_library_larger_than_a_config_is_refused() -> None:
    with pytest.raises(GpumemError, match="more than a Swarm config holds"):
        swarm.translate(
            {"services": {"t": gpu(**{"x-gpu-memory": 0.5})}}, library=("/l.so", b"x" * 1_024_000)
        )


@pytest.mark.parametrize(
    ("service", "key", "words"),
    [
        ({"image": "i", "gpus": "all"}, "gpus", "needs a count"),
        ({"image": "i", "gpus": [{"device_ids": ["0"]}]}, "gpus", "cannot pin device ids"),
        (
            {
                "image": "i",
                "deploy": {
                    "resources": {
                        "reservations": {"devices": [{"capabilities": ["gpu"], "device_ids": ["1"]}]}
                    }
                },
            },
            "deploy.resources.reservations.devices",
            "cannot pin device ids",
        ),
        (
            {
                "image": "i",
                "deploy": {"resources": {"reservations": {"devices": [{"capabilities": ["tpu"]}]}}},
            },
            "deploy.resources.reservations.devices",
            "no device reservations",
        ),
        ({"image": "i", "devices": [{"source": "nvidia.com/gpu=all"}]}, "devices", "Swarm ignores devices"),
        ({"image": "i", "runtime": "nvidia"}, "runtime", "default runtime"),
    ],
    ids=["gpus-all", "gpus-ids", "reservation-ids", "reservation-not-gpu", "cdi-all", "runtime"],
)
def test_gpu_requests_swarm_cannot_express_are_refused(service: dict[str, Any], key: str, words: str) -> None:
    message = refused({"t": {**service, "x-gpu-memory": 0.5}})
    assert message.startswith(f"c.yaml: service 't': {key} ")
    assert words in message


def test_cap_without_gpu_request_is_refused() -> None:
    with pytest.raises(GpumemError, match="requests no GPU") as caught:
        stack({"t": {"image": "i", "x-gpu-memory": 0.5}})
    assert "service 't'" in str(caught.value)


def test_cap_on_a_device_the_task_does_not_get_is_refused() -> None:
    with pytest.raises(InvalidValue, match="names device 1"):
        stack({"t": gpu(**{"x-gpu-memory": {"1": 0.5}})})


# ------------------------------------------------------------------ other keys, one by one


@pytest.mark.parametrize("key", sorted(swarm.REFUSED))
def test_keys_swarm_ignores_or_rejects_are_refused_by_name(key: str) -> None:
    message = refused({"svc": {"image": "i", key: "value"}})
    assert message.startswith(f"c.yaml: service 'svc': {key} 'value': ")


def test_unknown_service_key_is_refused() -> None:
    assert "pull_policy 'always': is not part of the Swarm stack format" in refused(
        {"s": {"image": "i", "pull_policy": "always"}}
    )


def test_tmpfs_which_swarm_ignores_becomes_volumes_of_type_tmpfs() -> None:
    mine = {"type": "bind", "source": "/d", "target": "/d"}
    result = stack({"s": {"image": "i", "read_only": True, "tmpfs": ["/tmp", "/var/run"], "volumes": [mine]}})
    assert result.document["services"]["s"]["volumes"] == [
        mine,
        {"type": "tmpfs", "target": "/tmp"},
        {"type": "tmpfs", "target": "/var/run"},
    ]
    assert "tmpfs" not in result.document["services"]["s"]
    assert "service 's': tmpfs (which Swarm ignores) -> volumes of type tmpfs" in result.notes
    single = stack({"s": {"image": "i", "tmpfs": "/tmp"}}).document["services"]["s"]
    assert single["volumes"] == [{"type": "tmpfs", "target": "/tmp"}]


def test_tmpfs_with_mount_options_is_refused_with_the_volume_to_write() -> None:
    message = refused({"s": {"image": "i", "tmpfs": ["/run:size=64m"]}})
    assert message.startswith("c.yaml: service 's': tmpfs '/run:size=64m': Swarm ignores tmpfs:")
    assert "type: tmpfs" in message


def test_x_key_inside_deploy_is_refused() -> None:
    assert "deploy.x-note" in refused({"s": {"image": "i", "deploy": {"x-note": 1}}})


def test_unknown_top_level_key_is_refused() -> None:
    with pytest.raises(swarm.SwarmUnsupported, match="top-level key 'models'"):
        stack({"s": {"image": "i"}}, models={})


@pytest.mark.parametrize(
    ("key", "value", "path", "expected"),
    [
        ("mem_limit", "1073741824", ("limits", "memory"), "1073741824"),
        ("mem_reservation", "536870912", ("reservations", "memory"), "536870912"),
        ("cpus", 0.5, ("limits", "cpus"), "0.5"),
        ("pids_limit", 100, ("limits", "pids"), 100),
    ],
)
def test_resource_keys_move_under_deploy_resources(
    key: str, value: Any, path: tuple[str, str], expected: Any
) -> None:
    result = stack({"s": {"image": "i", key: value}})
    service = result.document["services"]["s"]
    assert key not in service
    assert service["deploy"]["resources"][path[0]][path[1]] == expected
    assert any(key in note for note in result.notes)


@pytest.mark.parametrize(
    ("restart", "policy"),
    [
        ("always", {"condition": "any"}),
        ("unless-stopped", {"condition": "any"}),
        ("no", {"condition": "none"}),
        ("on-failure:3", {"condition": "on-failure", "max_attempts": 3}),
    ],
)
def test_restart_becomes_a_restart_policy(restart: str, policy: dict[str, Any]) -> None:
    result = stack({"s": {"image": "i", "restart": restart}})
    assert result.document["services"]["s"]["deploy"]["restart_policy"] == policy
    assert "restart" not in result.document["services"]["s"]


def test_restart_policy_already_set_wins() -> None:
    deploy = {"restart_policy": {"condition": "none"}}
    result = stack({"s": {"image": "i", "restart": "always", "deploy": deploy}})
    assert result.document["services"]["s"]["deploy"]["restart_policy"] == {"condition": "none"}
    assert any("restart left out" in note for note in result.notes)


def test_network_mode_host_becomes_the_external_host_network() -> None:
    result = stack({"s": gpu(network_mode="host", **{"x-gpu-memory": 0.5})})
    assert result.document["services"]["s"]["networks"] == {"hostnet": None}
    assert result.document["networks"]["hostnet"] == {"external": True, "name": "host"}
    assert "network_mode" not in result.document["services"]["s"]


def test_other_network_modes_are_refused() -> None:
    assert "network_mode 'service:db'" in refused({"s": {"image": "i", "network_mode": "service:db"}})


def test_profiles_build_expose_are_left_out_with_a_note() -> None:
    service = {"image": "i", "profiles": ["gpu"], "build": {"context": "."}, "expose": ["80"]}
    result = stack({"s": service})
    assert set(result.document["services"]["s"]) == {"image"}
    assert len(result.notes) == 3


def test_build_without_image_is_refused() -> None:
    assert "build" in refused({"s": {"build": {"context": "."}}})


def test_compose_v2_shapes_become_version_3_shapes() -> None:
    service = {
        "image": "i",
        "depends_on": {"db": {"condition": "service_started", "required": True}},
        "ports": [{"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}],
        "volumes": [{"type": "bind", "source": "/d", "target": "/d", "bind": {"create_host_path": True}}],
    }
    out = stack({"s": service, "db": {"image": "pg"}}).document["services"]["s"]
    assert out["depends_on"] == ["db"]
    assert out["ports"][0]["published"] == 8080
    assert out["volumes"] == [{"type": "bind", "source": "/d", "target": "/d"}]


def test_version_is_copied_exactly_else_the_default() -> None:
    doc = {"services": {"s": {"image": "i"}}}
    assert swarm.translate(doc, library=LIBRARY, version="3.7").document["version"] == "3.7"
    assert swarm.translate(doc, library=LIBRARY).document["version"] == swarm.DEFAULT_VERSION
    assert "name" not in swarm.translate({"name": "p", **doc}, library=LIBRARY).document


# --------------------------------------------------------------------------- per node overcommit

NODES = [swarm.Node("id1", "gpu-a", ("GPU-1",)), swarm.Node("id2", "gpu-b", ("GPU-2", "GPU-3"))]


def pinned(node: str, cap: Any, replicas: int = 1) -> dict[str, Any]:
    deploy = {"replicas": replicas, "placement": {"constraints": [f"node.hostname == {node}"]}}
    return gpu(deploy=deploy, **{"x-gpu-memory": cap})


def test_tasks_pinned_to_one_node_past_its_gpus_are_refused() -> None:
    result = stack({"a": pinned("gpu-a", 0.6), "b": pinned("gpu-a", 0.5)})
    with pytest.raises(Overcommit, match=r"node gpu-a are promised 1\.10 GPUs"):
        swarm.check_nodes(result, NODES)


def test_replicas_count_and_a_node_with_more_gpus_holds_more() -> None:
    with pytest.raises(Overcommit):
        swarm.check_nodes(stack({"a": pinned("gpu-b", 0.5, replicas=5)}), NODES)
    assert swarm.check_nodes(stack({"a": pinned("gpu-b", 0.5, replicas=4)}), NODES) == []


def test_freely_placed_services_are_named_in_a_note() -> None:
    notes = swarm.check_nodes(
        stack({"a": gpu(**{"x-gpu-memory": 0.9}), "b": gpu(**{"x-gpu-memory": 0.9})}), NODES
    )
    assert len(notes) == 2 and "checked against the swarm's GPUs of that kind only" in notes[0]


def test_whole_stack_past_the_swarms_gpus_of_the_kind_is_refused() -> None:
    free = gpu(deploy={"replicas": 4}, **{"x-gpu-memory": 0.5})
    assert len(swarm.check_nodes(stack({"a": free, "b": gpu(**{"x-gpu-memory": 0.5})}), NODES)) == 2
    with pytest.raises(
        Overcommit, match=r"stack's tasks are promised 3\.50 GPUs .* advertise as NVIDIA-GPU 3"
    ):
        swarm.check_nodes(stack({"a": free, "b": gpu(**{"x-gpu-memory": 0.5}), "c": gpu()}), NODES)


def test_a_device_without_a_cap_counts_whole_and_sizes_are_noted() -> None:
    two = {"image": "i", "gpus": [{"count": 2}], "x-gpu-memory": {"0": 0.5}, "deploy": {"replicas": 3}}
    with pytest.raises(Overcommit, match=r"promised 4\.50 GPUs"):
        swarm.check_nodes(stack({"a": two}), NODES)
    notes = swarm.check_nodes(stack({"a": gpu(**{"x-gpu-memory": "8GiB"})}), NODES)
    assert notes == ["service 'a': a cap given as a size is not checked against the nodes' GPUs"]


def test_nodes_are_read_from_docker_node_inspect() -> None:
    inspected = [
        {
            "ID": "x1",
            "Description": {
                "Hostname": "h1",
                "Resources": {
                    "GenericResources": [
                        {"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": "GPU-9"}},
                        {"DiscreteResourceSpec": {"Kind": "SSD", "Value": 1}},
                    ]
                },
            },
        },
        {"ID": "x2", "Description": {"Hostname": "h2", "Resources": {}}},
    ]
    assert swarm.parse_nodes(inspected) == [swarm.Node("x1", "h1", ("GPU-9",)), swarm.Node("x2", "h2", ())]


# ------------------------------------------------------------------ the command, real Compose


def test_stack_config_resolves_with_compose_and_copies_version(
    tmp_path: Path, compose_cmd: list[str], lib_dir: Path
) -> None:
    write(
        tmp_path / "compose.yaml", 'version: "3.8"\nservices:\n  t:\n    image: i\n    gpus: [{count: 1}]\n'
    )
    write(tmp_path / "gpu.yaml", "services:\n  t:\n    x-gpu-memory: ${SHARE:-0.25}\n    restart: always\n")
    proc = cli("stack", "config", "-c", "compose.yaml", "-c", "gpu.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = load(proc.stdout)
    assert doc["version"] == "3.8"
    assert doc["services"]["t"]["environment"]["GPUMEM_LIMIT"] == "0.25"
    assert "note: service 't': restart: always" in proc.stderr


def test_the_version_is_read_from_the_files_compose_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compose_gpumem import compose, stack_cli

    write(tmp_path / "a.yaml", "services: {}\n")
    write(tmp_path / "b.yaml", 'version: "3.7"\n')
    write(tmp_path / "compose.yaml", "version: '3.4'\n")
    monkeypatch.chdir(tmp_path)
    assert stack_cli.file_version(compose.Options()) == "3.4"  # the file Compose finds
    monkeypatch.setenv("COMPOSE_FILE", "a.yaml:b.yaml")
    assert stack_cli.file_version(compose.Options()) == "3.7"
    assert stack_cli.file_version(compose.Options(files=["-", "a.yaml"])) is None  # -f wins; stdin unread


def test_stack_config_refusal_is_one_line_and_exit_1(
    tmp_path: Path, compose_cmd: list[str], lib_dir: Path
) -> None:
    write(tmp_path / "compose.yaml", "services:\n  t:\n    image: i\n    gpus: all\n    x-gpu-memory: 0.5\n")
    proc = cli("-f", "compose.yaml", "stack", "config", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "gpumem-compose: compose.yaml: service 't': gpus 'all': Swarm needs a count of GPUs per task; "
        "ask for `count: N` instead of all"
    ]
