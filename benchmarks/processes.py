"""The processes of a running sandbox and their memory, for the benchmarks that weigh the stack.

A process belongs to the sandbox when it carries the sandbox's marker in its environment (the markers
`sandbox down` stops by: sandbox.profiles.local.process); its component marker says which service it serves
("postgres", "mlflow", "notebooks", "deployment:NAME", ...), and a child inherits it. PostgreSQL's children
(its backends, checkpointer, WAL writer, ...) write their titles over their environment, so a process whose
marker cannot be read counts to its nearest marked ancestor.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from sandbox.profiles.local.process import COMPONENT_MARKER, sandbox_processes

KIB = 1024
MIB = 2**20


@dataclass(frozen=True)
class Memory:
    """Resident (RSS) and proportional (PSS: shared pages split among their sharers) bytes."""

    rss: int = 0
    pss: int = 0

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.rss + other.rss, self.pss + other.pss)


def parse_smaps_rollup(text: str) -> Memory:
    """The Rss and Pss lines of /proc/PID/smaps_rollup (in kB), as bytes."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if name in ("Rss", "Pss") and len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0]) * KIB
    if "Rss" not in fields or "Pss" not in fields:
        raise ValueError(f"no Rss and Pss lines in smaps_rollup: {text[:200]!r}")
    return Memory(rss=fields["Rss"], pss=fields["Pss"])


def process_memory(pid: int) -> Memory:
    return parse_smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())


def service_of(component: str) -> str:
    """The service a component marker belongs to: a notebook's kernel (`notebooks.kernel`) counts to notebooks."""
    return component.split(".", 1)[0] or "(unmarked)"


def marked_processes(sandbox_dir: Path) -> Iterator[tuple[str, psutil.Process]]:
    """Every live process of the sandbox with its component marker, and the descendants whose marker is unreadable."""
    marked: dict[int, tuple[str, psutil.Process]] = {}
    for proc in sandbox_processes(str(sandbox_dir.resolve())):
        try:
            marked[proc.pid] = (proc.environ().get(COMPONENT_MARKER, ""), proc)
        except psutil.Error:
            continue  # ended meanwhile
    yield from marked.values()
    seen = set(marked)
    for _, proc in list(marked.values()):
        try:
            descendants = proc.children(recursive=True)
        except psutil.Error:
            continue
        for child in descendants:
            if child.pid in seen:
                continue
            seen.add(child.pid)
            component = nearest_marked(child, marked)
            if component is not None:
                yield component, child


def nearest_marked(proc: psutil.Process, marked: dict[int, tuple[str, psutil.Process]]) -> str | None:
    try:
        for parent in proc.parents():
            if parent.pid in marked:
                return marked[parent.pid][0]
    except psutil.Error:
        pass
    return None


@dataclass(frozen=True)
class ServiceMemory:
    service: str
    processes: int
    memory: Memory


def per_service(samples: Iterable[tuple[str, Memory]]) -> list[ServiceMemory]:
    """Sums (component, memory) samples per service, largest RSS first."""
    sums: dict[str, tuple[int, Memory]] = {}
    for component, memory in samples:
        count, total = sums.get(service_of(component), (0, Memory()))
        sums[service_of(component)] = (count + 1, total + memory)
    rows = [ServiceMemory(service, count, memory) for service, (count, memory) in sums.items()]
    return sorted(rows, key=lambda row: (-row.memory.rss, row.service))


def total(rows: Iterable[ServiceMemory]) -> Memory:
    summed = Memory()
    for row in rows:
        summed += row.memory
    return summed


def sandbox_memory(sandbox_dir: Path) -> list[ServiceMemory]:
    """The memory of every process of the sandbox, per service."""
    samples = []
    for component, proc in marked_processes(sandbox_dir):
        try:
            samples.append((component, process_memory(proc.pid)))
        except (OSError, ValueError):
            continue  # ended between listing and reading
    return per_service(samples)


def resident_mib(sandbox_dir: Path, *, settle_s: float = 3) -> float:
    """The resident memory (RSS, summed) of every process of the sandbox, after ``settle_s`` idle, in MiB."""
    time.sleep(settle_s)  # let the servers finish their start-up work
    return total(sandbox_memory(sandbox_dir)).rss / MIB
