"""The library builds warning-free with a C compiler alone and loads in any glibc >= 2.17."""

import re
import subprocess

from libgpumem_support import ROOT


def test_build_is_warning_free(built):
    assert "warning" not in built["make_log"].lower(), built["make_log"]
    assert "warning" not in built["stub_warnings"].lower(), built["stub_warnings"]


def test_no_glibc_symbol_newer_than_2_17(built):
    dyn = subprocess.run(
        ["objdump", "-T", str(built["so"])], capture_output=True, text=True, check=True
    ).stdout
    versions = set(re.findall(r"GLIBC_([0-9.]+)", dyn))
    assert versions, dyn
    too_new = [v for v in versions if tuple(map(int, v.split("."))) > (2, 17)]
    assert not too_new, f"needs glibc {too_new}:\n{dyn}"


def test_only_the_hooks_are_exported(built):
    dyn = subprocess.run(
        ["objdump", "-T", str(built["so"])], capture_output=True, text=True, check=True
    ).stdout
    defined = [ln.split()[-1] for ln in dyn.splitlines() if " g " in ln and "*UND*" not in ln]
    assert "cuMemAlloc_v2" in defined and "dlsym" in defined and "nvmlDeviceGetMemoryInfo_v2" in defined
    stray = [s for s in defined if not (s.startswith(("cu", "nvml")) or s == "dlsym")]
    assert not stray, stray
    # unversioned, so they interpose versioned references such as dlsym@GLIBC_2.34
    assert not re.search(r"\bGPUMEM", dyn)


def test_every_table_entry_is_exported_and_present_in_the_stand_in_driver(built):
    table = (ROOT / "libinterpose" / "src" / "table.h").read_text()
    names = re.findall(r"X\(LIB_\w+,\s*(\w+),", table)
    assert len(names) > 30

    def exported(path):
        dyn = subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True, check=True).stdout
        return {ln.split()[-1] for ln in dyn.splitlines() if ln.strip() and "*UND*" not in ln}

    ours = exported(built["so"])
    stubs = exported(built["stubs"] / "libcuda.so.1") | exported(built["stubs"] / "libnvidia-ml.so.1")
    assert not [n for n in names if n not in ours]
    assert not [n for n in names if n not in stubs]
