"""compose_gpumem.admission: the sum by GPU across containers, and the host-wide lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from compose_gpumem import admission
from compose_gpumem.admission import Holder, tally
from compose_gpumem.containers import GpuNames, Uncapped
from compose_gpumem.validate import parse_value

GiB = 1 << 30
TWO = GpuNames({"0": "GPU-a", "1": "GPU-b"}, {"GPU-a": 80 * GiB, "GPU-b": 40 * GiB})


def holder(name: str, **promise: object) -> Holder:
    return Holder(name, {gpu.replace("_", "-"): parse_value(v)[None] for gpu, v in promise.items()})


def test_fractions_sizes_and_per_device_caps_add_up_on_each_gpu() -> None:
    held = [holder("a-train-1", GPU_a=0.5), holder("b-serve-1", **{"0": "20GiB", "1": "30GiB"})]
    fits = tally(held, [holder("c-new-1", **{"1": 0.25})], TWO)  # 30 GiB + 25% of 40 GiB: all of it
    assert fits.refusals == [] and fits.warnings == []
    fits = tally(held, [holder("c-new-1", **{"0": "16GiB"})], TWO)  # 0.5 + 0.25 + 0.2 of GPU 0
    assert fits.refusals == []
    over = tally(held, [holder("c-new-1", **{"0": "24GiB"})], TWO)  # 0.5 + 0.25 + 0.3
    assert over.refusals == [
        "GPU 0 (GPU-a) would be promised 105% of its memory (held by a-train-1=0.5, b-serve-1=20GiB; "
        "starting c-new-1=24GiB)"
    ]


def test_a_gpu_only_held_by_others_is_not_judged() -> None:
    held = [holder("x", **{"1": 0.7}), holder("y", **{"1": 0.7})]  # already over, not ours
    assert tally(held, [holder("new", **{"0": 0.9})], TWO).refusals == []


def test_all_gpus_count_against_every_pinned_one() -> None:
    held = [holder("pinned", **{"1": 0.6})]
    verdict = tally(held, [holder("everywhere", all=0.5)], TWO)
    assert [line.split(" would")[0] for line in verdict.refusals] == ["GPU 1 (GPU-b)"]
    # and the other way round: a holder on every GPU meets a start pinned to one
    assert tally([holder("everywhere", all=0.5)], [holder("pinned", **{"0": 0.6})], TWO).refusals


def test_without_nvml_indexes_and_all_still_add_fractions() -> None:
    none = GpuNames()
    assert tally([holder("a", all=0.6)], [holder("b", **{"0": 0.6})], none).refusals == [
        "GPU 0 would be promised 120% of its memory (held by a=0.6; starting b=0.6)"
    ]
    assert tally([holder("a", all=0.6)], [holder("b", all=0.6)], none).refusals[0].startswith("every GPU")


def test_a_gpu_whose_memory_is_unknown_says_sizes_cannot_be_compared() -> None:
    verdict = tally([holder("a", **{"0": 0.9})], [holder("b", **{"0": "8GiB"})], GpuNames())
    assert verdict.refusals == []
    assert verdict.warnings == [
        "GPU 0: its memory is unknown (NVML cannot tell), so sizes cannot be compared with "
        "fractions there: b=8GiB not counted"
    ]


def test_labels_by_index_and_by_uuid_meet_on_the_same_gpu() -> None:
    verdict = tally([holder("by-index", **{"1": 0.6})], [holder("by-uuid", GPU_b=0.6)], TWO)
    assert verdict.refusals and verdict.refusals[0].startswith("GPU 1 (GPU-b) would be promised 120%")


def test_a_size_larger_than_the_gpu_counts_as_the_gpu() -> None:
    verdict = tally([], [holder("big", **{"1": "64GiB"})], TWO)
    assert verdict.refusals == []  # the library clamps it to the GPU's own memory
    assert tally([holder("small", **{"1": "1GiB"})], [holder("big", **{"1": "64GiB"})], TWO).refusals


def test_uncapped_gpu_containers_on_the_same_gpu_are_warned_about() -> None:
    users = [Uncapped("u1", "jupyter", "running", ("0",)), Uncapped("u2", "other", "running", ("1",))]
    verdict = tally([], [holder("new", **{"0": 0.3})], TWO, users)
    assert verdict.warnings == [
        "container jupyter uses GPU 0 (GPU-a) with no cap: it can take the memory promised to the others"
    ]


def test_a_holder_started_as_a_dependency_is_named_with_the_service_that_brings_it() -> None:
    held = [holder("a-train-1", GPU_a=0.5)]
    dependency = Holder("b-encoder-1", holder("", GPU_a=0.3).promise, "a dependency of trainer")
    over = tally(held, [dependency, holder("b-trainer-1", GPU_a=0.3)], TWO)
    assert over.refusals == [
        "GPU 0 (GPU-a) would be promised 110% of its memory (held by a-train-1=0.5; "
        "starting b-encoder-1=0.3 (a dependency of trainer), b-trainer-1=0.3)"
    ]


HOLD = """
import sys
from compose_gpumem import admission
fd = admission.host_lock()
print("held", flush=True)
sys.stdin.readline()
"""


def test_the_host_lock_lets_one_start_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "admission.lock"
    monkeypatch.setenv(admission.ENV_LOCK, str(lock))
    env = dict(os.environ)
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert first.stdout is not None and first.stdout.readline() == "held\n"
        monkeypatch.setattr(admission, "WAIT_LIMIT_S", 0.5)
        with pytest.raises(admission.GpumemError, match="held the admission lock"):
            admission.host_lock()
    finally:
        first.communicate("\n", timeout=30)
    fd = admission.host_lock()  # free again once the first has gone
    os.close(fd)
    assert oct(lock.stat().st_mode & 0o777) == "0o666"
