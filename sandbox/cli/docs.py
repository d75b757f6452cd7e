"""`make docs`: docs/cli.md from every command's `--help`, docs/configuration.md from the configuration's models.

    python -m sandbox.cli.docs            # write both files (into ./docs)
    python -m sandbox.cli.docs --check    # exit 1 naming each stale file, writing nothing

Both texts are deterministic: the help is rendered in a child Python whose environment fixes the terminal
(100 columns, no colour, none of typer's or rich's overrides), and the configuration comes from the pydantic
models alone. A generated text that holds this machine's working directory, home or temporary folder is
refused rather than written. `tests/unit/test_docs.py` regenerates both in memory and compares.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sandbox.cli.config_doc import GENERATED, markdown_cell, render_configuration
from sandbox.config import ENV_PREFIX

WIDTH = 100
CLI_DOC = Path("docs/cli.md")
CONFIG_DOC = Path("docs/configuration.md")
# What changes how typer and rich draw the help: unset in the child, which gets a fixed terminal instead.
_TERMINAL_VARIABLES = (
    "COLUMNS", "LINES", "TERMINAL_WIDTH", "FORCE_COLOR", "PY_COLORS", "CLICOLOR_FORCE", "NO_COLOR", "GITHUB_ACTIONS",
    "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS", "JUPYTER_LINES", "COLORTERM", "TYPER_USE_RICH",
    "_TYPER_FORCE_DISABLE_TERMINAL",
)  # fmt: skip
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding this `sandbox` package


# --------------------------------------------------------------------------- docs/cli.md


def render_cli() -> str:
    """docs/cli.md's text, rendered by a child Python with a fixed terminal (typer reads some settings on import)."""
    env = {key: value for key, value in os.environ.items() if key not in _TERMINAL_VARIABLES}
    env = {key: value for key, value in env.items() if not key.upper().startswith(ENV_PREFIX)}
    env.update(COLUMNS=str(WIDTH), LINES="50", TERM="dumb", NO_COLOR="1", PYTHONIOENCODING="utf-8")
    source_root = str(_SOURCE_ROOT)  # the child imports this same `sandbox`
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (source_root, env.get("PYTHONPATH"))))
    with tempfile.TemporaryDirectory() as cwd:  # no sandbox.yaml, no state of the caller's
        child = subprocess.run(
            [sys.executable, "-m", "sandbox.cli.docs", "--cli-markdown"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            check=False,
        )
    if child.returncode != 0:
        raise RuntimeError(f"rendering the CLI's help failed (exit {child.returncode}):\n{child.stderr.strip()}")
    return child.stdout


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every visible command under ``command`` with its path, in the order `--help` lists them.

    Duck-typed (a group is what lists commands): typer's commands are click's, or those of the click it vendors.
    """
    yield path, command
    if callable(getattr(command, "list_commands", None)):
        context = command.context_class(command, info_name="sandbox")
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, (*path, name))


def _cli_markdown() -> str:
    """What `render_cli` returns; run in the child it starts."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from sandbox.cli import app

    commands = list(_commands(get_command(app)))
    index, sections = [], []
    for path, command in commands:
        title = " ".join(("sandbox", *path))
        result = CliRunner().invoke(app, [*path, "--help"], prog_name="sandbox", color=False)
        if result.exit_code != 0:
            raise RuntimeError(f"`{title} --help` exited {result.exit_code}:\n{result.output}")
        lines = [line.rstrip() for line in _ANSI.sub("", result.output).splitlines()]
        text = "\n".join(lines).strip("\n")
        anchor = re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")
        summary = (command.short_help or command.help or "").split("\n\n")[0]  # the help's first paragraph
        index.append(f"| [`{title}`](#{anchor}) | {markdown_cell(summary)} |")
        sections.append(f"## `{title}`\n\n```text\n{text}\n```\n")
    head = [
        "# Command-line reference",
        "",
        GENERATED,
        "",
        f"Every command's `--help`, as `sandbox` prints it in a terminal {WIDTH} columns wide. The settings",
        "behind the options (`sandbox.yaml`, `SANDBOX_*` variables) are in [configuration.md](configuration.md).",
        "",
        "| Command | What it does |",
        "|---|---|",
        *index,
        "",
    ]
    return "\n".join(head) + "\n" + "\n".join(sections)


# --------------------------------------------------------------------------- docs/configuration.md


def _check_machine_free(name: str, text: str) -> str:
    """``text``, unless it holds a path of this machine (the output must be the same on every machine)."""
    places = [re.escape(place) for place in {os.getcwd(), str(Path.home()), str(_SOURCE_ROOT)} if len(place) > 1]
    places.append(re.escape(os.path.join(tempfile.gettempdir(), "tmp")) + r"\w+")  # the child's working folder
    found = re.search("|".join(places), text)
    if found:
        raise RuntimeError(f"{name} would hold {found[0]!r}, a path of this machine: fix that help text or default")
    return text


def generated() -> dict[Path, str]:
    """Each generated file (relative to the project's root) and what it should hold."""
    return {
        CLI_DOC: _check_machine_free(str(CLI_DOC), render_cli()),
        CONFIG_DOC: _check_machine_free(str(CONFIG_DOC), render_configuration()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.cli.docs", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale; write nothing")
    parser.add_argument("--root", type=Path, default=Path("."), help="the project's root (default: .)")
    parser.add_argument("--cli-markdown", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cli_markdown:
        sys.stdout.write(_cli_markdown())
        return 0
    stale = []
    for relative, text in generated().items():
        path = args.root / relative
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(str(relative))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {relative}")
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
