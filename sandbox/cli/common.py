"""What every command shares: loading its profile, option groups, and one decorator that registers it."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from sandbox import ui
from sandbox.cli.errors import handle_errors
from sandbox.config import fallback_config, load_config
from sandbox.errors import ConfigError
from sandbox.profiles import Profile, get_profile


def _profile(
    profile: str | None, dir: Path | None, config: Path | None, *, lenient: bool = False, **overrides: Any
) -> Profile:
    """The profile for a command; ``lenient`` commands (status, down, logs) survive a broken configuration.

    They warn, then work from what the sandbox recorded in its directory, so a running sandbox can
    always be inspected and stopped; every other command refuses a bad configuration (exit 2).
    """
    try:
        cfg = load_config(config, profile=profile, dir=dir, **overrides)
    except ConfigError as exc:
        if not lenient:
            raise
        cfg = fallback_config(config, profile=profile, dir=dir)
        fix = f" [yellow]Fix:[/] {escape(exc.hint)}" if exc.hint else ""
        ui.err.print(
            f"[yellow]warning:[/] {escape(exc.message)}; ignoring the configuration, "
            f"using what the sandbox in {escape(str(cfg.root))} recorded.{fix}"
        )
        if exc.details:
            ui.err.print(f"[dim]{escape(exc.details)}[/]")
    return get_profile(cfg)


class OptionGroup:
    """Options that several commands take together, declared once as a dataclass of typer annotations.

    A command names the group as one parameter (``stack: Stack = Stack()``); `expand_option_groups`
    shows typer the group's fields in that place instead, and hands the command one instance.
    """

    @classmethod
    def parameters(cls, kind: Any) -> list[inspect.Parameter]:
        hints = typing.get_type_hints(cls, include_extras=True)
        return [
            inspect.Parameter(f.name, kind, annotation=hints[f.name], default=f.default)
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        ]


def expand_option_groups(func):
    """``func`` with each `OptionGroup` parameter replaced, for typer, by the group's own options."""
    signature = inspect.signature(func, eval_str=True)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, tuple[type[OptionGroup], list[str]]] = {}
    for parameter in signature.parameters.values():
        group = parameter.annotation
        if isinstance(group, type) and issubclass(group, OptionGroup):
            fields = group.parameters(parameter.kind)
            groups[parameter.name] = (group, [f.name for f in fields])
            parameters += fields
        else:
            parameters.append(parameter)
    if not groups:
        return func

    @functools.wraps(func)
    def wrapper(**kwargs):
        for name, (group, fields) in groups.items():
            kwargs[name] = group(**{field: kwargs.pop(field) for field in fields})
        return func(**kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


def command(group: typer.Typer | None = None, name: str | None = None):
    """A command's function as typer gets it: option groups expanded, errors made readable.

    Registered on ``group`` when one is given (a sub-command); top-level commands are registered by
    `sandbox.cli`, in the order `sandbox --help` lists them.
    """

    def wrap(func):
        cli_function = handle_errors(expand_option_groups(func))
        if group is not None:
            group.command(name)(cli_function)
        return cli_function

    return wrap
