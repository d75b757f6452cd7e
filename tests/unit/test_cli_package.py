"""The CLI's shape: small modules, shared options declared once, commands listed where they always were."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from typer.main import get_command
from typer.testing import CliRunner

import sandbox.cli
from sandbox.cli import app
from sandbox.cli.common import OptionGroup, command

CLI_DIR = Path(sandbox.cli.__file__).parent
MAX_LINES = 300


def _commands(group=None, path=()):
    """(path, click command) for every command that runs something."""
    group = group or get_command(app)
    for name, sub in group.commands.items():
        if hasattr(sub, "commands"):
            yield from _commands(sub, (*path, name))
        else:
            yield (*path, name), sub


def test_no_cli_module_is_over_300_lines():
    sizes = {path.name: len(path.read_text().splitlines()) for path in CLI_DIR.glob("*.py")}
    assert {"__init__.py", "options.py", "common.py", "errors.py"} <= set(sizes)
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_shared_options_are_declared_once():
    for flag in ('"--profile"', '"--dir"', '"--config"', "training_data:", '"--junit"', '"--allow-nan"'):
        where = [p.name for p in CLI_DIR.glob("*.py") if flag in p.read_text()]
        assert where == ["options.py"], (flag, where)


def test_every_command_on_a_sandbox_takes_the_same_profile_dir_and_config_options():
    seen = 0
    for path, cmd in _commands():
        if path in (("scenario", "list"), ("loadtest-worker",)):  # scenario files only; a master's address only
            continue
        options = {p.name: (tuple(p.opts), p.help) for p in cmd.params}
        assert options["profile"][0] == ("--profile", "-p"), path
        assert options["dir"] == (("--dir", "-d"), "Sandbox state directory [default: .sandbox]"), path
        assert options["config"][0] == ("--config", "-c"), path
        seen += 1
    assert seen == 22


def test_the_top_level_commands_keep_their_order():
    assert list(get_command(app).commands) == [
        "up",
        "down",
        "status",
        "env",
        "logs",
        "checklist",
        "loadtest",
        "loadtest-worker",
        "doctor",
        "diagnose",
        "scenario",
        "gpu",
        "serve",
        "monitor",
    ]


@dataclass(frozen=True)
class Pair(OptionGroup):
    left: Annotated[int, typer.Option(help="Left")] = 1
    right: Annotated[str | None, typer.Option("--right", "-r", help="Right")] = None


def test_an_option_group_is_expanded_in_place_and_handed_over_as_one_object():
    demo = typer.Typer()
    got = []

    @command(demo, "go")
    def go(name: Annotated[str, typer.Argument()], pair: Pair = Pair(), flag: Annotated[bool, typer.Option()] = False):
        got.append((name, pair, flag))

    @command(demo, "other")  # a second command, so that typer keeps the sub-command names
    def other() -> None:
        pass

    assert [p.name for p in get_command(demo).commands["go"].params] == ["name", "left", "right", "flag"]
    result = CliRunner().invoke(demo, ["go", "x", "--left", "3", "-r", "y", "--flag"])
    assert result.exit_code == 0, result.output
    assert got == [("x", Pair(left=3, right="y"), True)]
    assert CliRunner().invoke(demo, ["go", "z"]).exit_code == 0
    assert got[-1] == ("z", Pair(), False)
