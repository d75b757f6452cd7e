"""Scenario reports: JUnit XML for CI, Markdown and HTML for people."""

from __future__ import annotations

import platform
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from sandbox.scenarios.results import Outcome, ScenarioResult

# XML 1.0 forbids most control characters; library output (colours) is full of them.
_NOT_XML = re.compile(r"\x1b\[[0-9;]*m|[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_safe(text: str) -> str:
    return _NOT_XML.sub("", text)


MARKS = {Outcome.PASSED: "✓", Outcome.FAILED: "✗", Outcome.SKIPPED: "skipped"}


def write_junit(results: list[ScenarioResult], path: Path, *, suite: str = "production-checklist") -> None:
    suite_el = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(sum(r.outcome == Outcome.FAILED for r in results)),
        skipped=str(sum(r.outcome == Outcome.SKIPPED for r in results)),
        errors="0",
        time=f"{sum(r.seconds for r in results):.3f}",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"),
        hostname=platform.node(),
    )
    for result in results:
        case = ET.SubElement(
            suite_el, "testcase", classname=f"scenarios.{suite}", name=result.name, time=f"{result.seconds:.3f}"
        )
        if result.outcome == Outcome.FAILED:
            failure = ET.SubElement(case, "failure", message=_xml_safe(result.reason))
            failure.text = _xml_safe(_detail(result))
        elif result.outcome == Outcome.SKIPPED:
            ET.SubElement(case, "skipped", message=_xml_safe(result.reason))
        out = ET.SubElement(case, "system-out")
        out.text = _xml_safe(_detail(result) + ("\n--- output ---\n" + result.output if result.output else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    root = ET.Element("testsuites", name="sandbox")
    root.append(suite_el)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def _detail(result: ScenarioResult) -> str:
    lines = [
        f"{'ok' if s.ok else 'FAILED'} {s.name} ({s.seconds:.2f}s){': ' + s.error if s.error else ''}"
        for s in result.steps
    ]
    lines += [f"evidence: {e}" for e in result.evidence]
    lines += [f"{label}: {url}" for label, url in result.links.items()]
    lines += [f"attachment: {result.attachment_path(name)} (in the --report folder)" for name in result.attachments]
    return "\n".join(lines)


def write_attachments(results: list[ScenarioResult], folder: Path) -> list[Path]:
    """Each scenario's attachments under ``folder``/attachments/SCENARIO/, where the reports link them."""
    written = []
    for result in results:
        for name, content in result.attachments.items():
            path = folder / result.attachment_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            written.append(path)
    return written


def write_markdown(results: list[ScenarioResult], path: Path, *, profile: str) -> None:
    lines = [
        f"# Production checklist · profile {profile}",
        "",
        "| item | scenario | result | evidence |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        summary = r.reason if r.outcome != Outcome.PASSED else (r.evidence[0] if r.evidence else "")
        lines.append(
            f"| {r.checklist} | `{r.name}` | {MARKS[r.outcome]} {r.outcome.value} ({r.seconds:.1f}s) | {summary} |"
        )
    for r in results:
        lines += ["", f"## {r.title} (`{r.name}`): {r.outcome.value}", ""]
        if r.reason:
            lines.append(f"**Reason:** {r.reason}")
            lines.append("")
        for s in r.steps:
            lines.append(f"- {'✓' if s.ok else '✗'} {s.name} ({s.seconds:.2f}s){' — ' + s.error if s.error else ''}")
        for e in r.evidence:
            lines.append(f"- evidence: {e}")
        for label, url in r.links.items():
            lines.append(f"- [{label}]({url})")
        for name in r.attachments:
            lines.append(f"- attachment: [{name}]({r.attachment_path(name)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_html(results: list[ScenarioResult], path: Path, *, profile: str) -> None:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sandbox.scenarios", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    page = env.get_template("checklist.html.j2").render(
        results=results, profile=profile, marks=MARKS, generated=time.strftime("%Y-%m-%d %H:%M:%S")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
