"""doctor's own decisions and messages: whether the library loads in an image (from its C
library's bytes), the room its ledger has (real directories), and how both reach the verdict
and the text."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from compose_gpumem import containers, doctor, enforce, hostfacts, imagelibc

HOST_LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")


def test_the_hosts_own_glibc_loads_the_library_and_names_its_release() -> None:
    if not HOST_LIBC.exists():
        pytest.skip(f"no {HOST_LIBC} on this host")
    release = os.confstr("CS_GNU_LIBC_VERSION").split()[-1]  # "glibc 2.36"
    found = imagelibc.classify("img", HOST_LIBC.read_bytes(), musl=False)
    assert (found.loads, found.glibc, found.why) == (True, release, f"glibc {release}")


def test_a_glibc_older_than_2_17_cannot_load_it() -> None:
    old = b"\x7fELF...\0GLIBC_2.2.5\0GLIBC_2.12\0...GNU C Library stable release version 2.12, by"
    found = imagelibc.classify("centos:6", old, musl=False)
    assert found.loads is False and found.glibc == "2.12"
    assert found.why == "glibc 2.12 is older than 2.17: libgpumem.so cannot load, programs would run uncapped"


def test_musl_cannot_load_it_and_nothing_found_is_unknown() -> None:
    musl = imagelibc.classify("alpine", None, musl=True)
    assert musl.loads is False
    assert musl.why == "musl libc, no glibc: libgpumem.so cannot load, programs would run uncapped"
    none = imagelibc.classify("scratch", None, musl=False)
    assert (none.loads, none.why) == (None, "unknown: no libc.so.6 where distributions keep it")
    odd = imagelibc.classify("odd", b"not a glibc", musl=False)
    assert (odd.loads, odd.why) == (None, "unknown: its libc.so.6 names no glibc release")
    # a glibc whose banner is gone still defines the version node
    assert imagelibc.classify("x", b"\0GLIBC_2.17\0", musl=False).loads is True


def test_libc_is_looked_for_where_distributions_keep_it_debian_first() -> None:
    assert imagelibc.candidates("amd64")[:3] == [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
    ]
    assert imagelibc.candidates("arm64")[0] == "/lib/aarch64-linux-gnu/libc.so.6"
    assert imagelibc.candidates("riscv64")[0] == "/lib64/libc.so.6"


def test_ledger_bytes_is_the_size_of_the_librarys_ledger(tmp_path: Path) -> None:
    layout = Path(__file__).resolve().parents[2] / "libinterpose" / "src"
    source = tmp_path / "size.c"
    source.write_text(
        '#include <stdio.h>\n#include <stdint.h>\n#include "ledger_layout.h"\n'
        'int main(void) { printf("%zu %s\\n", sizeof(struct ledger), LEDGER_NAME); return 0; }\n'
    )
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, f"-I{layout}", "-o", str(tmp_path / "size"), str(source)], check=True)
    out = subprocess.run([str(tmp_path / "size")], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(doctor.LEDGER_BYTES), doctor.LEDGER_FILE]


def capped(state_dir: str, pid: int) -> containers.Capped:
    return containers.Capped(
        id="c0ffee",
        name="p-app-1",
        status="running" if pid else "exited",
        pid=pid,
        limit={},
        promise={},
        enforce="library",
        state_dir=state_dir,
        project="p",
        service="app",
    )


def test_ledger_room_is_read_through_the_containers_root(tmp_path: Path) -> None:
    box = capped(str(tmp_path), os.getpid())  # this process's root is the host's
    room = doctor.ledger_room(box)
    fs = os.statvfs(tmp_path)
    assert room["size"] == fs.f_blocks * fs.f_frsize and room["free"] > 0
    assert (room["ledger_bytes"], room["problem"]) == (None, "")
    (tmp_path / doctor.LEDGER_FILE).write_bytes(b"\0" * 4096)
    assert doctor.ledger_room(box)["ledger_bytes"] == 4096
    assert doctor.ledger_room(capped(str(tmp_path), 0)) == {"dir": str(tmp_path), "error": "not running"}
    gone = doctor.ledger_room(capped(str(tmp_path / "gone"), os.getpid()))
    assert gone["error"] == "unreadable from here (No such file or directory): doctor reads it as root"


def test_a_ledger_still_to_be_made_needs_room() -> None:
    assert doctor.room_problem(doctor.LEDGER_BYTES, None) == ""
    assert doctor.room_problem(0, doctor.LEDGER_BYTES) == ""  # made already: it needs no more
    assert doctor.room_problem(64 * 1024, None) == (
        "64.0 KiB free, and the ledger takes 277.1 KiB: its first CUDA process will have every "
        "allocation refused"
    )


def facts(local: bool = True) -> hostfacts.Facts:
    gpu = hostfacts.Gpu(0, "GPU-0", "Fake GPU 0", 8 << 30, False)
    engine = hostfacts.Engine("unix:///var/run/docker.sock", local, version="26.1.5", runtimes=("nvidia",))
    library = hostfacts.Library("/usr/local/lib/gpumem/libgpumem.so", True)
    return hostfacts.Facts(
        hostfacts.Nvml(driver="580.159.04", cuda=13000, gpus=(gpu,)), engine, library, "/x"
    )


def report(loads: bool | None, running: list[containers.Capped], monkeypatch: pytest.MonkeyPatch, local=True):
    monkeypatch.setattr(doctor, "library_path", lambda facts, services: [])  # the host part is e2e's
    decision = enforce.Decision("app", "auto", "library", ("old driver",))
    image = imagelibc.ImageLibc("img:1", loads, "the verdict in words")
    return doctor.report(facts(local), {"app": {}}, {"app": decision}, images={"app": image}, running=running)


@pytest.mark.parametrize(
    ("loads", "ok", "shown"),
    [(True, True, "libgpumem.so loads"), (None, True, "cannot tell"), (False, False, "NOT CAPPED")],
)
def test_an_image_the_library_cannot_load_in_is_not_ok_and_unknown_is_said(
    monkeypatch: pytest.MonkeyPatch, loads: bool | None, ok: bool, shown: str
) -> None:
    data = report(loads, [], monkeypatch)
    assert data["ok"] is ok
    assert data["services"]["app"]["image"] == {
        "name": "img:1",
        "loads": loads,
        "why": "the verdict in words",
    }
    assert f"    image img:1: the verdict in words ({shown})\n" in doctor.render(data)


def test_running_containers_are_listed_with_their_ledger_and_a_full_one_is_not_ok(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = report(True, [capped(str(tmp_path), os.getpid())], monkeypatch)
    assert data["ok"] is True and data["running"][0]["ledger"]["problem"] == ""
    text = doctor.render(data)
    assert (
        "running capped containers:\n  p-app-1: library; ledger " in text and "free, no ledger yet\n" in text
    )
    monkeypatch.setattr(doctor, "room_problem", lambda free, ledger: "no room")
    full = report(True, [capped(str(tmp_path), os.getpid())], monkeypatch)
    assert full["ok"] is False and doctor.render(full).count(": no room") == 1
    unreadable = containers.Capped(**{**capped("", 1).__dict__, "problem": "labels unreadable: x"})
    data = report(True, [unreadable], monkeypatch)
    assert data["ok"] is False and "  p-app-1: library: labels unreadable: x\n" in doctor.render(data)


def test_images_come_from_composes_yaml_and_a_built_one_is_named_as_compose_names_it() -> None:
    text = "name: shop\nservices:\n  a:\n    image: nvidia/cuda:12\n  b:\n    build: .\n"
    assert doctor.service_images(text) == ("shop", {"a": "nvidia/cuda:12", "b": "shop-b"})


def test_a_remote_engines_containers_ledgers_are_not_read_through_this_hosts_proc(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = report(True, [capped(str(tmp_path), os.getpid())], monkeypatch, local=False)
    assert data["running"][0]["ledger"] == {
        "dir": str(tmp_path),
        "error": "the engine is on another host: not read from here",
    }
    assert "; ledger " + str(tmp_path) + ": the engine is on another host" in doctor.render(data)


def live_data(mode: str) -> dict:
    nvml = {"gpus": [{"total": 8 << 30}]}
    return {"ok": True, "host": {"nvml": nvml}, "services": {"app": {"enforce": mode}}}


@pytest.mark.parametrize(
    ("mode", "total_mib", "ok"),
    [("library", 2048, True), ("library", 8192, False), ("both", 8192, False), ("driver", 8192, True)],
)
def test_live_judges_the_total_seen_except_where_the_driver_alone_caps(mode, total_mib, ok):
    data = live_data(mode)
    doctor.add_live(data, {"app": {"total_mib": {"0": total_mib}}})
    assert data["ok"] is ok
    assert ("note" in data["services"]["app"]["live"]) == (mode == "driver")


def test_live_without_a_reading_is_not_ok_whatever_enforces() -> None:
    for mode in ("library", "driver"):
        data = live_data(mode)
        doctor.add_live(data, {"app": {"error": "exit 127: nvidia-smi: not found"}})
        assert data["ok"] is False
