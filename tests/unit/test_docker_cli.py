"""gpumem-docker: --gpu-memory turned into -v and -e, everything else to docker untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from unit_helpers import cli

from compose_gpumem.containers import GpuNames
from compose_gpumem.docker_cli import rewrite
from compose_gpumem.errors import InvalidValue, NoGpuRequest, UsageError

INJECTED = [
    "--mount",
    "type=bind,source=/L/libgpumem.so,target=/opt/gpumem/libgpumem.so,readonly",
    "--mount",
    "type=tmpfs,destination=/run/gpumem",
    "-e",
    "LD_PRELOAD=/opt/gpumem/libgpumem.so",
    "-e",
    "GPUMEM_STATE_DIR=/run/gpumem",
    "-e",
    "GPUMEM_LIMIT=0.3",
    "--label",
    "io.gpumem.enforce=library",
    "--label",
    "io.gpumem.limit=all=0.3",
    "--label",
    "io.gpumem.promise=all=0.3",
    "--label",
    "io.gpumem.state-dir=/run/gpumem",
    "--label",
    "io.gpumem.version=1",
]


def test_gpu_memory_is_replaced_by_the_injection_and_the_rest_kept_in_order() -> None:
    args = [
        "run",
        "--rm",
        "-it",
        "--gpus",
        "all",
        "--gpu-memory",
        "0.3",
        "-p",
        "80:80",
        "img",
        "python",
        "x.py",
    ]
    assert rewrite(args, lib_dir="/L", environ={}) == [
        "run",
        *INJECTED,
        "--rm",
        "-it",
        "--gpus",
        "all",
        "-p",
        "80:80",
        "img",
        "python",
        "x.py",
    ]


def test_equals_form_and_container_run_and_global_options() -> None:
    args = ["--context", "ctx", "container", "run", "--gpus=all", "--gpu-memory=0.3", "img"]
    assert rewrite(args, lib_dir="/L", environ={}) == [
        "--context",
        "ctx",
        "container",
        "run",
        *INJECTED,
        "--gpus=all",
        "img",
    ]


def test_gpu_memory_after_the_image_belongs_to_the_command() -> None:
    args = ["run", "--gpus", "all", "img", "sh", "-c", "echo", "--gpu-memory", "0.3"]
    assert rewrite(args, lib_dir="/L", environ={}) == args


def test_an_option_value_that_looks_like_an_image_is_not_the_image() -> None:
    args = ["run", "--name", "job", "-e", "A=1", "--gpus", "all", "--gpu-memory", "0.3", "img"]
    assert rewrite(args, lib_dir="/L", environ={})[-5:] == ["-e", "A=1", "--gpus", "all", "img"]


def test_existing_ld_preload_is_kept_behind_ours() -> None:
    args = ["run", "-e", "LD_PRELOAD=/x.so", "--runtime", "nvidia", "--gpu-memory", "1GiB", "img"]
    out = rewrite(args, lib_dir="/L", environ={})
    assert "LD_PRELOAD=/opt/gpumem/libgpumem.so /x.so" in out and "LD_PRELOAD=/x.so" not in out
    bare = rewrite(
        ["run", "-e", "LD_PRELOAD", "--gpus", "1", "--gpu-memory", "1GiB", "img"],
        lib_dir="/L",
        environ={"LD_PRELOAD": "/host.so"},
    )
    assert "LD_PRELOAD=/opt/gpumem/libgpumem.so /host.so" in bare


def test_per_device_mapping_as_json() -> None:
    out = rewrite(
        ["run", "--gpus", "all", "--gpu-memory", '{"0": 0.5, "1": "8GiB"}', "img"], lib_dir="/L", environ={}
    )
    assert "GPUMEM_LIMIT_0=0.5" in out and "GPUMEM_LIMIT_1=8GiB" in out


def test_other_subcommands_and_run_without_the_option_pass_through() -> None:
    for args in (["ps", "-a"], ["run", "--rm", "img"], ["build", "--gpu-memory", "x", "."]):
        assert rewrite(args, lib_dir="/L", environ={}) == args


def test_errors() -> None:
    with pytest.raises(InvalidValue, match="must be"):
        rewrite(["run", "--gpus", "all", "--gpu-memory", "2", "img"], environ={})
    with pytest.raises(NoGpuRequest, match="add `--gpus all`"):
        rewrite(["run", "--gpu-memory", "0.3", "img"], environ={})
    with pytest.raises(UsageError):
        rewrite(["run", "--gpus", "all", "--gpu-memory"], environ={})


def test_docker_gets_the_arguments_and_its_exit_code_comes_back(
    tmp_path: Path, fake_docker: Path, lib_dir: Path
) -> None:
    done = cli(
        "run",
        "--gpus",
        "all",
        "--gpu-memory",
        "30%",
        "img",
        "nvidia-smi",
        cwd=tmp_path,
        prog="docker",
        env={"GPUMEM_DOCKER_BIN": str(fake_docker)},
    )
    assert done.returncode == 5, done.stderr
    recorded = (tmp_path / "record").read_text().splitlines()
    assert recorded[:3] == [
        "run",
        "--mount",
        f"type=bind,source={lib_dir}/libgpumem.so,target=/opt/gpumem/libgpumem.so,readonly",
    ]
    assert "GPUMEM_LIMIT=30%" in recorded and recorded[-2:] == ["img", "nvidia-smi"]


def test_run_refuses_without_the_library(tmp_path: Path, fake_docker: Path) -> None:
    done = cli(
        "run",
        "--gpus",
        "all",
        "--gpu-memory",
        "0.3",
        "img",
        cwd=tmp_path,
        prog="docker",
        env={"GPUMEM_DOCKER_BIN": str(fake_docker), "GPUMEM_LIB_DIR": str(tmp_path / "none")},
    )
    assert done.returncode == 1 and "install-lib" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "record").exists()


def test_ld_preload_from_an_env_file_is_kept_behind_ours(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("# app\nA=1\nLD_PRELOAD=/usr/lib/libtcmalloc.so\n")
    out = rewrite(
        ["run", "--env-file", str(env_file), "--gpus", "all", "--gpu-memory", "0.3", "img"],
        lib_dir="/L",
        environ={},
    )
    assert "LD_PRELOAD=/opt/gpumem/libgpumem.so /usr/lib/libtcmalloc.so" in out
    assert out[out.index("--env-file") + 1] == str(env_file)


def test_every_container_gets_a_ledger_tmpfs_of_its_own_whatever_its_ipc() -> None:
    for ipc in ([], ["--ipc=host"], ["--ipc", "container:other"]):
        out = rewrite(["run", *ipc, "--gpus", "all", "--gpu-memory", "0.3", "img"], environ={})
        assert "type=tmpfs,destination=/run/gpumem" in out
        assert "GPUMEM_STATE_DIR=/run/gpumem" in out


def _labels(out: list[str]) -> dict[str, str]:
    pairs = [out[i + 1].split("=", 1) for i, arg in enumerate(out) if arg == "--label"]
    return {key: value for key, value in pairs}


@pytest.mark.parametrize(
    ("gpus", "promise"),
    [
        (["--gpus", "all"], "all=0.3"),
        (["--gpus", "device=1,3"], "1=0.3,3=0.3"),
        (["--gpus", '"device=2,3",capabilities=compute'], "2=0.3,3=0.3"),
        (["--gpus=2"], "0=0.3,1=0.3"),
        (["--device", "nvidia.com/gpu=1"], "1=0.3"),
        (["--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=0"], "0=0.3"),
    ],
)
def test_labels_promise_the_cap_on_each_gpu_asked_for(gpus: list[str], promise: str) -> None:
    labels = _labels(rewrite(["run", *gpus, "--gpu-memory", "0.3", "img"], environ={}))
    assert labels["io.gpumem.promise"] == promise
    assert labels["io.gpumem.limit"] == "all=0.3"


def test_labels_name_gpus_by_uuid_where_nvml_knows_them() -> None:
    names = GpuNames({"0": "GPU-a", "1": "GPU-b"}, {"GPU-a": 1 << 30, "GPU-b": 1 << 30})
    args = ["run", "--gpus", "device=1", "--gpu-memory", '{"0": "512MiB"}', "img"]
    labels = _labels(rewrite(args, environ={}, names=names))
    assert labels["io.gpumem.promise"] == "GPU-b=512MiB"
    assert labels["io.gpumem.limit"] == "0=512MiB"
    every = _labels(rewrite(["run", "--gpus", "all", "--gpu-memory", "0.5", "img"], environ={}, names=names))
    assert every["io.gpumem.promise"] == "GPU-a=0.5,GPU-b=0.5"


def test_a_cdi_device_is_a_gpu_request() -> None:
    for device in (["--device", "nvidia.com/gpu=all"], ["--device=nvidia.com/gpu=0"]):
        out = rewrite(["run", *device, "--gpu-memory", "0.3", "img"], lib_dir="/L", environ={})
        assert "GPUMEM_LIMIT=0.3" in out and out[-1] == "img"
    with pytest.raises(NoGpuRequest):
        rewrite(["run", "--device", "/dev/fuse", "--gpu-memory", "0.3", "img"], environ={})


@pytest.mark.parametrize(
    "args", [[], ["--help"], ["run", "--help"], ["container", "create", "--rm", "--help"]]
)
def test_help_names_our_option_before_dockers_own(tmp_path: Path, fake_docker: Path, args: list[str]) -> None:
    done = cli(*args, cwd=tmp_path, prog="docker", env={"GPUMEM_DOCKER_BIN": str(fake_docker)})
    assert done.stdout.startswith("gpumem-docker: docker, with more options")
    assert "--enforce MODE" in done.stdout and "--gpu-memory-request V" in done.stdout
    assert "--gpu-memory V" in done.stdout
    assert done.returncode == 5  # then Docker's help, with its arguments untouched
    assert (tmp_path / "record").read_text().splitlines() == (args or [""])


@pytest.mark.parametrize("args", [["ps"], ["run", "img", "prog", "--help"], ["run", "--", "--help"]])
def test_no_help_note_where_help_is_not_asked_of_run(
    tmp_path: Path, fake_docker: Path, args: list[str]
) -> None:
    done = cli(*args, cwd=tmp_path, prog="docker", env={"GPUMEM_DOCKER_BIN": str(fake_docker)})
    assert done.stdout == ""


def test_library_mount_keeps_a_directory_with_a_comma_in_one_field() -> None:
    """Docker reads --mount as one CSV line: a comma in the path is quoted, not a new field."""
    import csv

    from compose_gpumem.docker_cli import library_mount

    (fields,) = csv.reader([library_mount('/opt/a,b "c"/')])
    assert fields == [
        "type=bind",
        'source=/opt/a,b "c"/libgpumem.so',
        "target=/opt/gpumem/libgpumem.so",
        "readonly",
    ]
