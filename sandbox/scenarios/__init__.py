"""Production-checklist scenarios: what a scenario file imports, and the names the rest of the sandbox uses.

`results` (outcomes, steps), `context` (what a scenario is handed), `registry` (`@scenario`, `discover`),
`runner` (one scenario, the checklist), `reports` (JUnit, Markdown, HTML), `artifacts` (a run's clean-up).
A scenario file:

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

from sandbox.scenarios.context import ScenarioContext
from sandbox.scenarios.names import SCENARIO_PREFIX, is_scenario_name, scenario_name
from sandbox.scenarios.registry import Scenario, discover, scenario
from sandbox.scenarios.results import Outcome, ScenarioFailed, ScenarioResult
from sandbox.scenarios.runner import run_scenario

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
