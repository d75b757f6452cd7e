"""Production-checklist scenarios: the engine, and what a scenario file imports.

from sandbox.scenarios import scenario, ScenarioContext

@scenario("my-check", title="...", checklist="...", needs=["mlflow"])
def my_check(ctx: ScenarioContext) -> None:
    with ctx.step("do something real"):
        ...
    ctx.check(condition, "what went wrong")
    ctx.evidence("one line a person can verify")
"""

from sandbox.scenarios.engine import (
    Outcome,
    Scenario,
    ScenarioContext,
    ScenarioFailed,
    ScenarioResult,
    discover,
    run_scenario,
    scenario,
)

__all__ = [
    "Outcome",
    "Scenario",
    "ScenarioContext",
    "ScenarioFailed",
    "ScenarioResult",
    "discover",
    "run_scenario",
    "scenario",
]
