"""docs/cli.md and docs/configuration.md are generated (`make docs`): these tests fail when either is stale."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from sandbox.cli import docs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "relative, render", [(docs.CLI_DOC, docs.render_cli), (docs.CONFIG_DOC, docs.render_configuration)]
)
def test_the_generated_docs_are_current(relative, render):
    expected = render()
    path = ROOT / relative
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current != expected:
        diff = difflib.unified_diff(
            current.splitlines(), expected.splitlines(), f"{relative} (committed)", f"{relative} (now)", lineterm=""
        )
        pytest.fail(f"{relative} is stale: run `make docs`\n" + "\n".join(list(diff)[:60]), pytrace=False)


def test_the_texts_are_the_same_on_every_run_and_machine(monkeypatch):
    first = docs.render_configuration()
    assert docs.render_configuration() == first
    monkeypatch.setenv("COLUMNS", "47")  # the caller's terminal changes nothing: the child gets a fixed one
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERMINAL_WIDTH", "61")
    cli = docs.render_cli()
    assert "\x1b[" not in cli
    assert max(len(line) for line in cli.splitlines() if line.startswith(("│", "╭", "╰"))) == docs.WIDTH
    assert str(Path.cwd()) not in cli + first
    with pytest.raises(RuntimeError, match="a path of this machine"):
        docs._check_machine_free("docs/x.md", f"default: {Path.cwd() / 'state'}")


def test_every_command_and_every_configuration_key_is_documented():
    cli = (ROOT / docs.CLI_DOC).read_text(encoding="utf-8")
    for title in ("sandbox", "sandbox up", "sandbox serve deploy", "sandbox monitor watch"):
        assert f"## `{title}`\n" in cli
    configuration = (ROOT / docs.CONFIG_DOC).read_text(encoding="utf-8")
    for section in ("postgres", "kind.host_ports", "kube.timeouts", "gpu.nodes[]", "remote.s3"):
        assert f"## `{section}`\n" in configuration
    assert "| `port` | integer (≥ 0, ≤ 65535) | `0` | `SANDBOX_MLFLOW__PORT` |" in configuration
    assert "no `local:` section" in configuration


def test_check_names_each_stale_file_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(docs, "render_cli", lambda: "# cli\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / docs.CLI_DOC).write_text("# cli\n")
    assert docs.main(["--check", "--root", str(tmp_path)]) == 1
    assert "stale: docs/configuration.md; run `make docs`" in capsys.readouterr().err
    assert not (tmp_path / docs.CONFIG_DOC).exists()
    assert docs.main(["--root", str(tmp_path)]) == 0
    assert docs.main(["--check", "--root", str(tmp_path)]) == 0
    assert (tmp_path / docs.CONFIG_DOC).read_text() == docs.render_configuration()
