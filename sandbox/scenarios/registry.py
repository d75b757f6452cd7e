"""How scenarios are declared and found: `@scenario(...)` registers a function, `discover()` imports the files.

A scenario is a function decorated with `@scenario(...)` in a `.py` file under `scenarios/` (or a folder
given with `--scenarios-dir`). It passes by returning, fails by raising (`ctx.check` raises
`ScenarioFailed`), and is skipped only when the profile lacks a capability it declared (``needs``).
Scenarios may run side by side (`sandbox checklist --jobs N`); one that changes something others read
(the GPU inventory) names it in ``exclusive``, and no two scenarios naming the same thing run at once.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandbox.scenarios.context import ScenarioContext


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    checklist: str  # the production-checklist item it proves
    needs: tuple[str, ...]
    func: Callable[[ScenarioContext], None]
    source: str
    order: int = 100
    exclusive: tuple[str, ...] = ()  # what it must not share with a scenario running beside it
    expected_s: float = 10.0  # about how long it takes alone: side by side, the longest start first


_REGISTRY: dict[str, Scenario] = {}


def scenario(
    name: str,
    *,
    title: str,
    checklist: str,
    needs: tuple[str, ...] | list[str] = (),
    order: int = 100,
    exclusive: tuple[str, ...] | list[str] = (),
    expected_s: float = 10.0,
) -> Callable:
    """Register a scenario function under ``name``; ``exclusive`` names what it must not share with another
    scenario running at the same time (e.g. ``"gpu-inventory"``); ``expected_s`` is about how long it takes
    alone, so that side by side the longest start first (the checklist's order is kept in its results)."""

    def register(func: Callable[[ScenarioContext], None]) -> Callable[[ScenarioContext], None]:
        source = getattr(sys.modules.get(func.__module__), "__file__", func.__module__)
        existing = _REGISTRY.get(name)
        if existing is not None and existing.source != source:
            raise ValueError(f"scenario {name!r} is defined twice: {existing.source} and {source}")
        _REGISTRY[name] = Scenario(
            name, title, checklist, tuple(needs), func, str(source), order, tuple(exclusive), expected_s
        )
        return func

    return register


def default_scenarios_dir() -> Path:
    """The project's `scenarios/` folder (next to the `sandbox` package)."""
    return Path(__file__).resolve().parents[2] / "scenarios"


def discover(extra_dirs: list[Path] | None = None) -> dict[str, Scenario]:
    """Import every scenario file; return the registry, ordered for the checklist."""
    for folder in [default_scenarios_dir(), *(extra_dirs or [])]:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            module_name = f"sandbox_scenario_{path.parent.name}_{path.stem}"
            if module_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
    return dict(sorted(_REGISTRY.items(), key=lambda item: (item[1].order, item[0])))
