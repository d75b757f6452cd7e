"""The data-versioning scenario's DVC commands: in-process, and without DVC's usage analytics (which would start a
daemon per command that posts to analytics.dvc.org, off this machine)."""

import os
import sys

from sandbox.scenarios.registry import discover


class _Context:
    def __init__(self):
        self.failed: list[str] = []

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.failed.append(message)


def _scenario_module():
    """The scenario's module as the checklist loads it (`discover`: once, whatever other tests loaded)."""
    return sys.modules[discover()["data-versioning"].func.__module__]


def test_a_dvc_command_sends_no_usage_report(tmp_path, monkeypatch):
    from dvc import analytics

    monkeypatch.setenv("DVC_NO_ANALYTICS", "")  # recorded, so what the command sets is undone after the test
    monkeypatch.delenv("DVC_NO_ANALYTICS")
    monkeypatch.delenv("DVC_TEST", raising=False)
    sent = []
    monkeypatch.setattr(analytics, "collect_and_send_report", lambda *args, **kwargs: sent.append(args))
    monkeypatch.chdir(tmp_path)
    ctx = _Context()
    _scenario_module()._dvc(ctx, tmp_path, "init", "--no-scm")
    assert ctx.failed == [] and (tmp_path / ".dvc").is_dir()  # the command ran
    assert sent == []
    assert os.environ.get("DVC_NO_ANALYTICS") == "1"
