"""How `sandbox loadtest` shows its results: the run, the capacity search, the comparison, the gates."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from sandbox import ui
from sandbox.cli.render import titled_table


def loadtest(summary: dict, report_dir: Path) -> None:
    if summary.get("capacity"):
        _capacity(summary["capacity"])
    if summary.get("comparison"):
        _comparison(summary["comparison"])
    open_loop = summary.get("mode") == "open"
    title = "Results (open loop: latency from the scheduled send)" if open_loop else "Results"
    if summary.get("capacity") or summary.get("comparison"):
        title += ", the last run"
    table = Table(title=title, title_justify="left")
    for column in ("requests", "failures", "req/s", "p50", "p90", "p95", "p99", "max"):
        table.add_column(column, justify="right")
    digits = 1 if open_loop else 0  # Locust's percentiles are bucketed; ours are to 0.1%
    table.add_row(
        str(summary["requests"]),
        str(summary["failures"]),
        f"{summary['rps']:.1f}",
        *(f"{summary[k]:.{digits}f} ms" for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")),
    )
    ui.out.print(table)
    if open_loop:
        service = summary["service_time"]
        ui.out.print(
            f"Service time (from the actual send): p50 {service['p50_ms']:.1f} ms, p99 {service['p99_ms']:.1f} ms. "
            f"Sent late: {summary['late']} ({summary['late_percent']:.2f}%, limit {summary['max_late_percent']:g}%), "
            f"worst {summary['max_lag_ms']:.0f} ms."
        )
        if not summary["valid"]:
            ui.err.print(
                "[red]invalid run:[/] the generator fell behind its schedule; its latencies are partly its own. "
                "Use --processes N, a lower rate, or another machine."
            )
    if summary["errors"]:
        ui.out.print("Errors: " + ", ".join(f"{kind} x{count}" for kind, count in summary["errors"].items()))
    gates = summary["slo"] + summary["baseline"]
    if gates:
        verdicts = titled_table("Gates", "gate", "observed", "limit", "verdict", "by")
        for v in gates:
            verdicts.add_row(
                v["objective"],
                f"{v['observed']:.1f}{v['unit']}",
                f"{v['threshold']:.1f}{v['unit']}",
                "[green]pass[/]" if v["passed"] else "[red]FAIL[/]",
                v["margin"],
            )
        ui.out.print(verdicts)
    if summary["generator_saturated"]:
        ui.err.print(
            f"[yellow]warning:[/] the load generator's CPU peaked at {summary['generator_cpu_percent']['max']:.0f}%: "
            "these figures measure the generator, not the server; use --processes N or another machine"
        )
    verdict = "[green]PASSED[/]" if summary["passed"] else "[red]FAILED[/]"
    others = "summary.json, raw.json" if open_loop else "Locust's: locust_report.html, summary.json, CSVs"
    ui.err.print(f"{verdict} · report: {report_dir}/summary.html ({others})")


def _capacity(capacity: dict) -> None:
    steps = titled_table(
        f"Capacity search against {capacity['slo']}", "#", "rate", "why", "p50", "p99", "errors", "verdict"
    )
    for n, s in enumerate(capacity["steps"], 1):
        verdict = "[green]held[/]" if s["passed"] else ("[yellow]invalid[/]" if not s["valid"] else "[red]broke[/]")
        latency = (f"{s['p50_ms']:.1f} ms", f"{s['p99_ms']:.1f} ms")
        steps.add_row(str(n), f"{s['rate']:g}", s["why"], *latency, f"{s['error_rate']:.2f}%", verdict)
    ui.out.print(steps)
    held, broke = capacity["held_rps"], capacity["broke_rps"]
    if held is not None:
        twice = " (every run)" if capacity["confirmed"] else ""
        runs = [step["passed"] for step in capacity["steps"] if step["rate"] == broke]
        above = f"; {broke:g} req/s broke it ({runs.count(False)} of {len(runs)} runs)" if broke is not None else ""
        above = above or ("; the top of the search held" if capacity["reached_max_rate"] else "")
        always = capacity.get("always_broke_rps")
        if always is not None and always != broke:
            above += f"; every run broke from {always:g} req/s"
        ui.out.print(f"Edge: {held:g} req/s held {capacity['slo']}{twice}{above}")
    sustainable = capacity.get("sustainable_rps")
    if sustainable is not None:
        below = f"{capacity['headroom']:.0%} below the edge, " if sustainable != held else ""
        ui.out.print(f"Capacity: [bold]{sustainable:g} req/s[/] sustainable ({below}held every run)")
    if capacity["stopped"]:
        ui.err.print(f"[yellow]the search stopped early:[/] {capacity['stopped']}")


def _comparison(comparison: dict) -> None:
    labels = comparison["labels"]
    table = titled_table(
        f"B = {labels['b']} against A = {labels['a']}, {len(comparison['rounds'])} rounds",
        "metric",
        "A",
        "B",
        "B - A (95% CI)",
        "relative",
        "verdict",
    )
    for m in comparison["metrics"]:
        relative = f"{m['relative'] * 100:+.1f}%" if m["relative"] is not None else "-"
        table.add_row(
            m["metric"],
            f"{m['a_mean']:.2f} {m['unit']}",
            f"{m['b_mean']:.2f} {m['unit']}",
            f"{m['difference']:+.2f} ({m['ci_low']:+.2f} … {m['ci_high']:+.2f})",
            relative,
            m["verdict"],
        )
    ui.out.print(table)
