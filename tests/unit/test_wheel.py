"""The wheel carries a native library, so it is tagged for one machine, not py3-none-any: this
machine's, or aarch64 cross-built with Debian's gcc-aarch64-linux-gnu (`GPUMEM_ARCH=aarch64`).
In both, the library needs no glibc symbol newer than GLIBC_2.17 and the ledger reader none at
all (manylinux2014), and the aarch64 library caps the stand-in driver under qemu-user."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: ELF e_machine of each machine a wheel is built for
ELF_MACHINE = {"x86_64": 62, "aarch64": 183}
PACKAGED = ("compose_gpumem/lib/libgpumem.so", "compose_gpumem/lib/gpumem-ledger")
GiB = 1 << 30


def build_wheel(out: Path, **env: str) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{done.stderr[-3000:]}", pytrace=False)
    (wheel,) = out.glob("*.whl")
    return wheel


def unpacked(wheel: Path, out: Path) -> dict[str, Path]:
    """The two native files of ``wheel``, extracted under ``out``."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert set(PACKAGED) <= set(names), names
        meta = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        assert "Root-Is-Purelib: false" in archive.read(meta).decode()
        files = {}
        for name in PACKAGED:
            mode = archive.getinfo(name).external_attr >> 16
            assert mode & 0o111 == 0o111, f"{name}: mode {mode:o}, pip would install it not executable"
            files[Path(name).name] = Path(archive.extract(name, out))
            files[Path(name).name].chmod(mode & 0o777)  # zipfile leaves modes out
        return files


def elf_machine(path: Path) -> int:
    """e_machine of a 64-bit little-endian ELF file (its header, read as bytes)."""
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1, head
    return int.from_bytes(head[18:20], "little")


def glibc_versions(path: Path) -> set[tuple[int, ...]]:
    """The GLIBC_x.y versions ``path`` needs, read by readelf (any machine's ELF)."""
    shown = subprocess.run(["readelf", "-V", "-W", str(path)], capture_output=True, text=True, check=True)
    return {tuple(map(int, v.split("."))) for v in re.findall(r"Name: GLIBC_([0-9.]+)", shown.stdout)}


def check_for_manylinux2014(files: dict[str, Path], arch: str) -> None:
    for path in files.values():
        assert elf_machine(path) == ELF_MACHINE[arch], path
    versions = glibc_versions(files["libgpumem.so"])
    assert versions and max(versions) <= (2, 17), versions
    assert glibc_versions(files["gpumem-ledger"]) == set()  # linked statically: runs on any glibc


def test_wheel_with_the_library_is_a_manylinux2014_platform_wheel(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    arch = platform.machine()
    assert wheel.name.endswith(f"-py3-none-manylinux_2_17_{arch}.manylinux2014_{arch}.whl")
    check_for_manylinux2014(unpacked(wheel, tmp_path / "files"), arch)


def cross_tools() -> None:
    """Skip (fail under CI=true, whose tests/run.sh installs them) without the cross tools."""
    missing = [
        tool for tool in ("aarch64-linux-gnu-gcc", "qemu-aarch64", "readelf") if not shutil.which(tool)
    ]
    if platform.machine() != "x86_64":
        pytest.skip("the aarch64 wheel is cross-built on x86_64")
    if missing:
        install = "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
        reason = f"missing {', '.join(missing)} ({install})"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def aarch64_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cross_tools()
    out = tmp_path_factory.mktemp("aarch64")
    wheel = build_wheel(out / "wheel", GPUMEM_ARCH="aarch64")
    assert wheel.name.endswith("-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"), wheel.name
    return unpacked(wheel, out / "files")


def test_the_aarch64_wheel_holds_aarch64_files_for_manylinux2014(aarch64_files: dict[str, Path]) -> None:
    check_for_manylinux2014(aarch64_files, "aarch64")


def test_the_aarch64_library_caps_the_stand_in_driver_under_qemu(
    aarch64_files: dict[str, Path], tmp_path: Path
) -> None:
    """The packaged aarch64 library, preloaded into an aarch64 client of the stand-in driver,
    run by qemu-user: the cap is the total the client sees, and an allocation past it is refused;
    the packaged ledger reader then reads that ledger."""
    cc = "aarch64-linux-gnu-gcc"
    stubs = ROOT / "tests" / "stubs"
    library = ["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", tmp_path / "libcuda.so.1"]
    for argv in (
        [cc, "-O2", *library, stubs / "fake_cuda.c", "-lpthread"],
        [cc, "-O2", "-o", tmp_path / "probe", stubs / "gpumem_probe.c", tmp_path / "libcuda.so.1"],
    ):
        subprocess.run([str(a) for a in argv], check=True, capture_output=True, timeout=120)
    state = tmp_path / "state"
    env = {
        "LD_PRELOAD": str(aarch64_files["libgpumem.so"]),
        "LD_LIBRARY_PATH": str(tmp_path),
        "GPUMEM_LIMIT": "0.25",
        "GPUMEM_STATE_DIR": str(state),
        "FAKE_CUDA_TOTAL": str(8 * GiB),
    }
    qemu = [
        "qemu-aarch64",
        "-L",
        "/usr/aarch64-linux-gnu",
        *(a for k, v in env.items() for a in ("-E", f"{k}={v}")),
    ]

    def probe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*qemu, str(tmp_path / "probe"), *args], capture_output=True, text=True, timeout=60
        )

    info = probe("info")
    assert info.returncode == 0, info.stderr
    assert "total=2147483648 " in info.stdout + " ", info.stdout  # 0.25 of 8 GiB
    past = probe("alloc", str(2 * GiB))
    assert (past.returncode, past.stdout.split()[:1]) == (3, ["oom"]), past.stdout + past.stderr
    read = subprocess.run(
        ["qemu-aarch64", str(aarch64_files["gpumem-ledger"]), str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert read.returncode == 0 and '"valid": true' in read.stdout, read.stdout + read.stderr
