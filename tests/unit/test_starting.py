"""compose_gpumem.starting: which services a Compose command starts, checked against the rules
read from Compose's code and, for every selection `config SERVICE...` can show, against the real
Compose itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from compose_gpumem import compose, starting
from compose_gpumem.starting import Start

#: trainer -> helper -> {db, encoder (profile gpu, optional)}; tools (profile debug) -> db;
#: web depends on db with restart: true; other stands alone.
STACK = {
    "services": {
        "trainer": {"image": "busybox", "depends_on": ["helper"]},
        "helper": {
            "image": "busybox",
            "depends_on": {
                "db": {"condition": "service_started"},
                "encoder": {"condition": "service_started", "required": False},
            },
        },
        "encoder": {"image": "busybox", "profiles": ["gpu"]},
        "db": {"image": "busybox"},
        "tools": {"image": "busybox", "profiles": ["debug"], "depends_on": ["db", "cache"]},
        "cache": {"image": "busybox", "profiles": ["debug", "gpu"]},
        "web": {"image": "busybox", "depends_on": {"db": {"condition": "service_started", "restart": True}}},
        "other": {"image": "busybox"},
    }
}


@pytest.fixture
def stack(tmp_path: Path, compose_cmd: list[str]) -> tuple[Path, dict[str, starting.Node]]:
    """STACK in a file, and its services as read from Compose's output of every profile."""
    path = tmp_path / "compose.yaml"
    path.write_text(json.dumps(STACK))
    text = subprocess.run(
        [*compose_cmd, "-f", str(path), "--profile", "*", "config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return path, starting.read(text)


def names(starts: list[Start]) -> list[str]:
    return [s.service for s in starts]


def test_compose_output_is_read_with_profiles_and_dependencies(stack) -> None:
    _, graph = stack
    assert list(graph) == sorted(STACK["services"])  # every service, in Compose's order
    assert graph["helper"].needs == {"db": True, "encoder": False}
    assert graph["trainer"].needs == {"helper": True}
    assert graph["web"].restarts_with == ("db",) and graph["helper"].restarts_with == ()
    assert graph["cache"].profiles == ("debug", "gpu") and graph["other"] == starting.Node()


@pytest.mark.parametrize(
    ("profiles", "named"),
    [
        ([], []),
        ([], ["trainer"]),
        (["gpu"], ["trainer"]),
        ([], ["helper", "web"]),
        ([], ["encoder"]),  # named: its profile is enabled
        ([], ["tools"]),  # its profile brings cache, which it needs
        (["gpu"], []),
        (["*"], ["other"]),
        (["debug"], ["trainer"]),
    ],
)
def test_up_starts_what_compose_selects_for_the_same_services(stack, compose_cmd, profiles, named) -> None:
    """`docker compose config SERVICE...` selects as `up SERVICE...` does (both load the project
    for those services): ours must name the same services."""
    path, graph = stack
    flags = [arg for p in profiles for arg in ("--profile", p)]
    printed = subprocess.run(
        [*compose_cmd, "-f", str(path), *flags, "config", "--format", "json", *named],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert names(starting.starts(graph, "up", ["-d", *named], profiles)) == sorted(
        json.loads(printed)["services"]
    )


def test_a_dependency_started_for_a_named_service_says_which(stack) -> None:
    _, graph = stack
    assert starting.starts(graph, "up", ["trainer"], []) == [
        Start("db", because="trainer"),
        Start("helper", because="trainer"),
        Start("trainer"),
    ]


def test_no_deps_starts_the_named_services_alone(stack) -> None:
    _, graph = stack
    for command in ("up", "scale"):
        assert names(
            starting.starts(graph, command, ["--no-deps", "trainer" if command == "up" else "trainer=2"], [])
        ) == ["trainer"]
    assert names(starting.starts(graph, "run", ["--rm", "--no-deps", "tools", "sh"], [])) == ["tools"]
    assert names(starting.starts(graph, "up", ["--no-deps"], [])) == [
        "db",
        "helper",
        "other",
        "trainer",
        "web",
    ]


def test_run_starts_its_service_as_a_one_off_and_its_dependencies_as_services(stack) -> None:
    _, graph = stack
    # what follows the service is the container's command, --no-deps included
    assert starting.starts(graph, "run", ["--rm", "-e", "A=1", "tools", "env", "--no-deps", "web"], []) == [
        Start("cache", because="tools"),
        Start("db", because="tools"),
        Start("tools", oneoff=True),
    ]


def test_create_start_and_scale_bring_dependencies_as_up_does(stack) -> None:
    _, graph = stack
    up = names(starting.starts(graph, "up", ["helper"], ["gpu"]))
    assert up == ["db", "encoder", "helper"]
    for command, args in (("create", ["helper"]), ("start", ["helper"]), ("scale", ["helper=3"])):
        assert names(starting.starts(graph, command, args, ["gpu"])) == up


def test_restart_brings_the_services_that_restart_with_the_named_ones(stack) -> None:
    _, graph = stack
    assert starting.starts(graph, "restart", ["db"], []) == [Start("db"), Start("web", because="db")]
    assert names(starting.starts(graph, "restart", ["--no-deps", "db"], [])) == ["db"]
    assert names(starting.starts(graph, "restart", ["helper"], [])) == ["helper"]  # not its dependencies


def test_a_required_dependency_outside_the_enabled_profiles_is_not_counted(tmp_path: Path) -> None:
    """Compose refuses such a command ("no such service"), so nothing of it starts."""
    graph = {"a": starting.Node(("x",), {"b": True}), "b": starting.Node(("y",))}
    assert names(starting.starts(graph, "up", ["a"], [])) == ["a"]


def test_command_line_replicas_of_up_create_and_scale() -> None:
    assert starting.scales("up", ["-d", "--scale", "w=3", "--scale=x=2", "--scale", "bad"]) == {
        "w": 3,
        "x": 2,
    }
    assert starting.scales("scale", ["--no-deps", "w=3", "x=1"]) == {"w": 3, "x": 1}
    assert starting.scales("run", ["--scale", "w=3"]) == {}
    assert starting.split_args("up", ["-d", "--timeout", "5", "-t", "3", "web", "worker"]) == (
        ["-d", "--timeout", "-t"],
        ["web", "worker"],
    )


def test_profiles_are_the_flags_else_compose_profiles_from_the_environment_then_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("COMPOSE_PROFILES=gpu, debug\n")
    options = compose.Options(project_directory=str(tmp_path))
    assert starting.profiles_of(options) == ["gpu", "debug"]
    monkeypatch.setenv("COMPOSE_PROFILES", "x")
    assert starting.profiles_of(options) == ["x"]
    options.profiles = ["torch"]  # --profile wins over COMPOSE_PROFILES, as in Compose
    assert starting.profiles_of(options) == ["torch"]
