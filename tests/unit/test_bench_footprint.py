"""The footprint benchmark's pure parts (smaps_rollup parsed, memory summed per service) and how it finds a
sandbox's processes: by the marker, and a child whose marker is unreadable by its marked parent (PostgreSQL's)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks.processes import (
    KIB,
    Memory,
    ServiceMemory,
    marked_processes,
    parse_smaps_rollup,
    per_service,
    process_memory,
    sandbox_memory,
    total,
)
from sandbox.profiles.local.process import COMPONENT_MARKER, HOME_MARKER

SMAPS_ROLLUP = """\
55d0c8a4e000-7ffd3b5f2000 ---p 00000000 00:00 0                          [rollup]
Rss:              104392 kB
Pss:               87654 kB
Pss_Dirty:         70000 kB
Pss_Anon:          69000 kB
Shared_Clean:      20000 kB
Private_Dirty:     70000 kB
Swap:                  0 kB
SwapPss:               0 kB
"""


def test_smaps_rollup_gives_rss_and_pss_in_bytes():
    assert parse_smaps_rollup(SMAPS_ROLLUP) == Memory(rss=104392 * KIB, pss=87654 * KIB)


def test_a_smaps_rollup_without_pss_is_an_error_not_a_zero():
    with pytest.raises(ValueError, match="Rss and Pss"):
        parse_smaps_rollup("Rss:  100 kB\nSwapPss:  0 kB\n")


def test_this_process_reads_its_own_rollup():
    memory = process_memory(os.getpid())
    assert 0 < memory.pss <= memory.rss


def test_memory_is_summed_per_service_and_a_kernel_counts_to_notebooks():
    mib = 2**20
    rows = per_service(
        [
            ("mlflow", Memory(300 * mib, 200 * mib)),
            ("mlflow", Memory(300 * mib, 210 * mib)),
            ("notebooks", Memory(100 * mib, 80 * mib)),
            ("notebooks.kernel", Memory(200 * mib, 150 * mib)),
            ("deployment:fraud", Memory(350 * mib, 260 * mib)),
        ]
    )
    assert rows == [
        ServiceMemory("mlflow", 2, Memory(600 * mib, 410 * mib)),
        ServiceMemory("deployment:fraud", 1, Memory(350 * mib, 260 * mib)),
        ServiceMemory("notebooks", 2, Memory(300 * mib, 230 * mib)),
    ]
    assert total(rows) == Memory(1250 * mib, 900 * mib)
    assert total([]) == Memory()


def test_a_marked_process_and_its_unmarked_child_are_found_and_weighed_together(tmp_path: Path):
    """The child runs with an empty environment (`env -i`), as unreadable as a PostgreSQL backend's."""
    env = {**os.environ, HOME_MARKER: str(tmp_path.resolve()), COMPONENT_MARKER: "postgres"}
    parent = subprocess.Popen(["sh", "-c", "env -i sleep 60 & wait"], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(found := list(marked_processes(tmp_path))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted((component, proc.name()) for component, proc in found) == [
            ("postgres", "sh"),
            ("postgres", "sleep"),
        ]
        [row] = sandbox_memory(tmp_path)
        assert row.service == "postgres" and row.processes == 2 and row.memory.rss > 0
        assert list(marked_processes(tmp_path / "another")) == []
    finally:
        os.killpg(parent.pid, 15)
        parent.wait(10)
