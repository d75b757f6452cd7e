"""Options that several commands share, declared once: typer `Annotated` aliases and option groups."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from sandbox.cli.common import OptionGroup, _profile
from sandbox.profiles import PROFILES, Profile

ProfileOpt = Annotated[
    str | None, typer.Option("--profile", "-p", help=f"Where the stack runs: {', '.join(PROFILES)} [default: local]")
]
DirOpt = Annotated[Path | None, typer.Option("--dir", "-d", help="Sandbox state directory [default: .sandbox]")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (default: ./sandbox.yaml if present)")
]


@dataclass(frozen=True)
class Stack(OptionGroup):
    """--profile, --dir, --config: which sandbox a command works on."""

    profile: ProfileOpt = None
    dir: DirOpt = None
    config: ConfigOpt = None

    def open(self, *, lenient: bool = False, **overrides: Any) -> Profile:
        """The profile these options name (``lenient``: survive a broken configuration, see `_profile`)."""
        return _profile(self.profile, self.dir, self.config, lenient=lenient, **overrides)


# --------------------------------------------------------------------------- serving

BatchWaitOpt = Annotated[float, typer.Option(help="Max wait for a batch to fill, in ms")]
InferenceLogOpt = Annotated[
    bool,
    typer.Option(
        "--inference-log/--no-inference-log",
        help="Log each inference (features, prediction, model version) for drift monitoring",
    ),
]
AllowNanOpt = Annotated[
    bool,
    typer.Option(
        "--allow-nan",
        help="Pass NaN and infinite inputs to the model (for models that handle missing values); refused by default",
    ),
]
DeploymentNameOpt = Annotated[str, typer.Argument(help="Deployment or split name")]

# --------------------------------------------------------------------------- scenarios

ScenariosDirOpt = Annotated[
    list[Path] | None, typer.Option("--scenarios-dir", help="Another folder of scenario files (repeatable)")
]
# None: `side_by_side.default_jobs()`, read only when scenarios run (the CLI imports nothing heavy to parse).
JobsOpt = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        help="Scenarios to run at once, each in a process of its own; 1 runs them one after another "
        "(default: 2 per CPU core, at least 2)",
    ),
]


@dataclass(frozen=True)
class ChecklistOutput(OptionGroup):
    """--junit, --report, --scenarios-dir, --keep-artifacts: what `checklist` and `scenario run` read and write."""

    junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here (for CI)")] = None
    report: Annotated[
        Path | None, typer.Option("--report", help="Write checklist.md and checklist.html into this folder")
    ] = None
    scenarios_dir: ScenariosDirOpt = None
    keep_artifacts: Annotated[
        bool,
        typer.Option(
            "--keep-artifacts",
            help="On a platform the sandbox does not own (remote), keep what this run made "
            "(MLflow tag sandbox.checklist.run_id) instead of deleting it",
        ),
    ] = False


# --------------------------------------------------------------------------- monitoring


@dataclass(frozen=True)
class RetrainingOverrides(OptionGroup):
    """The retraining policy's settings a command may override (None: as configured)."""

    training_data: Annotated[
        str | None, typer.Option(help="Labelled CSV to train on, s3://BUCKET/KEY or a path [monitoring.retraining]")
    ] = None
    eval_data: Annotated[
        str | None,
        typer.Option(help="Fresh labelled CSV to score challenger and champion on [monitoring.retraining]"),
    ] = None
    deployment: Annotated[
        str | None, typer.Option(help="Deployment to redeploy on promotion [default: the model's name]")
    ] = None
    margin: Annotated[float | None, typer.Option(help="Accuracy the challenger must gain to be promoted")] = None
