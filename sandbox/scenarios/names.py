"""The checklist's names: the prefix of everything a scenario creates, and the tag naming its run.

The engine names what scenarios make with these, and `artifacts` finds a run's
leftovers by them (a module of its own, so neither imports the other's).
"""

from __future__ import annotations

SCENARIO_PREFIX = "checklist-"
"""The one prefix of every name a scenario gives what it creates; a user's names never start with it."""


def scenario_name(*parts: str) -> str:
    """A name of the checklist's own: ``SCENARIO_PREFIX`` then ``parts`` joined with '-'.

    Kept a DNS-1123 label when the parts are (lower case, digits, '-'), so it
    also fits deployments and namespaces.
    """
    if not parts or not all(parts):
        raise ValueError("a scenario name needs at least one non-empty part")
    return SCENARIO_PREFIX + "-".join(parts)


def is_scenario_name(name: str) -> bool:
    """Whether ``name`` is one the checklist may create, change or delete."""
    return name.startswith(SCENARIO_PREFIX) and len(name) > len(SCENARIO_PREFIX)


RUN_ID_TAG = "sandbox.checklist.run_id"
"""The MLflow tag (experiments, runs, registered and logged models) naming the checklist run that made it."""
