"""Production-checklist scenarios: the engine, and what a scenario file imports.

from sandbox.scenarios import scenario, ScenarioContext

@scenario("my-check", title="...", checklist="...", needs=["mlflow"])
def my_check(ctx: ScenarioContext) -> None:
    with ctx.step("do something real"):
        ...
    ctx.check(condition, "what went wrong")
    ctx.evidence("one line a person can verify")

Whatever a scenario creates on the stack is named with SCENARIO_PREFIX
("checklist-"): `scenario_name("my-check")` for a fixed name,
`ctx.unique("my-check")` for one per run.
"""

from sandbox.scenarios.engine import (
    SCENARIO_PREFIX,
    Outcome,
    Scenario,
    ScenarioContext,
    ScenarioFailed,
    ScenarioResult,
    discover,
    is_scenario_name,
    run_scenario,
    scenario,
    scenario_name,
)

__all__ = [
    "SCENARIO_PREFIX",
    "Outcome",
    "Scenario",
    "ScenarioContext",
    "ScenarioFailed",
    "ScenarioResult",
    "discover",
    "is_scenario_name",
    "run_scenario",
    "scenario",
    "scenario_name",
]
