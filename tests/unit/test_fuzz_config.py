"""A fuzz of `gpumem-compose config` (hypothesis, fixed seed, bounded): whatever the file holds,
the answer is a result (exit 0) or a one-line error of ours (exit 1); never an internal error,
a traceback or a hang.  Also the "billion laughs" is refused before Compose sees it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from unit_helpers import PACKAGE_ROOT, write

ODD_TEXT = st.text(st.sampled_from("0123456789.%eEkKmMgGiIbBpP \t-+xé\u2028${}[]:#&*!|>'\""), max_size=12)
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | ODD_TEXT
    | st.sampled_from(["0.3", "30%", "12GiB", "12GB", "1e-30", "24051P", "9" * 400, "1.0", "100%"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["0", "1", "gpu", "-1"]), inner, max_size=3)
    ),
    max_leaves=6,
)
GPU_REQUEST = st.sampled_from(
    [
        {},
        {"gpus": "all"},
        {"runtime": "nvidia"},
        {
            "deploy": {
                "resources": {
                    "reservations": {"devices": [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}
                }
            }
        },
        {
            "deploy": {
                "resources": {
                    "reservations": {"devices": [{"driver": "nvidia", "capabilities": ["compute"]}]}
                }
            }
        },
        {"gpus": [{"device_ids": ["0"]}]},
    ]
)
SERVICE = st.builds(
    lambda request, value, has_value, env, profile: {
        "image": "x",
        **request,
        **({"x-gpu-memory": value} if has_value else {}),
        **({"environment": env} if env else {}),
        **({"profiles": [profile]} if profile else {}),
    },
    GPU_REQUEST,
    VALUES,
    st.booleans(),
    st.dictionaries(st.sampled_from(["LD_PRELOAD", "GPUMEM_LIMIT", "A"]), ODD_TEXT, max_size=2),
    st.sampled_from([None, "a", "b"]),
)
PROJECT = st.builds(
    lambda services, default: {
        **({"x-gpu-memory": default} if default is not None else {}),
        "services": services,
    },
    st.dictionaries(st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True), SERVICE, min_size=1, max_size=4),
    st.none() | VALUES,
)
#: Text damage on top of a valid document: YAML syntax errors, tabs, deep nesting.
DAMAGE = st.sampled_from(["", "\t", ": [", "\n  - ]", "{" * 40, "&a x\n*a", "\x01"])


def run_config(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`gpumem-compose config` in its own session: on a hang the whole group (Compose too) is
    killed and the test fails, nothing is left running."""
    env = {"PYTHONPATH": PACKAGE_ROOT, "PATH": os.environ["PATH"], "GPUMEM_LIB_DIR": str(directory)}
    argv = [sys.executable, "-m", "compose_gpumem", *args, "config"]
    process = subprocess.Popen(
        argv,
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"gpumem-compose config hung on {directory / 'compose.yaml'}")
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def assert_result_or_one_line_error(done: subprocess.CompletedProcess[str]) -> None:
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    if done.returncode == 0:
        assert done.stdout.strip(), done.stderr
        return
    assert done.returncode == 1, (done.returncode, done.stderr)
    ours = [line for line in done.stderr.splitlines() if line.startswith("gpumem-compose:")]
    assert len(ours) == 1 and len(ours[0]) < 600, done.stderr


@pytest.mark.usefixtures("compose_cmd")
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(project=PROJECT, damage=DAMAGE, overcommit=st.booleans())
@example(
    project={"services": {"a": {"image": "x", "gpus": "all", "x-gpu-memory": [[[[]]]]}}},
    damage="",
    overcommit=False,
)
def test_any_compose_file_gives_a_result_or_one_line_error(
    tmp_path: Path, project: dict, damage: str, overcommit: bool
) -> None:
    text = json.dumps(project, ensure_ascii=False, allow_nan=True)
    text = text.replace("NaN", ".nan").replace("-Infinity", "-.inf").replace("Infinity", ".inf")
    if damage:
        cut = len(text) // 2
        text = text[:cut] + damage + text[cut:]
    write(tmp_path / "compose.yaml", text)
    assert_result_or_one_line_error(run_config(tmp_path, *(["--allow-overcommit"] if overcommit else [])))


def test_a_billion_laughs_is_refused_before_compose_reads_it(tmp_path: Path, compose_cmd: list[str]) -> None:
    lines = ['x-l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"x-l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    write(tmp_path / "compose.yaml", "\n".join(lines) + "\nservices:\n  web:\n    image: x\n")
    started = time.monotonic()
    done = run_config(tmp_path)
    assert_result_or_one_line_error(done)
    assert done.returncode == 1 and "anchors and aliases expand" in done.stderr
    assert time.monotonic() - started < 30  # refused, not resolved (Compose takes minutes)


def test_ordinary_anchors_still_resolve(tmp_path: Path, compose_cmd: list[str]) -> None:
    services = "".join(f"  s{i}:\n    <<: *defaults\n    image: x{i}\n" for i in range(300))
    write(
        tmp_path / "compose.yaml",
        "x-defaults: &defaults\n  restart: always\n  environment: {A: '1', B: '2'}\nservices:\n" + services,
    )
    done = run_config(tmp_path)
    assert done.returncode == 0, done.stderr
