"""The load-test report: summary.json, a chart of RPS and latency over time, an HTML summary."""

from __future__ import annotations

import base64
import io
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def environment_info(target: str) -> dict:
    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "target": target,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "versions": {name: pkg(name) for name in ("locust", "kserve", "mlflow", "ml-platform-sandbox")},
    }


def chart_png(timeline: list[dict]) -> bytes:
    """Requests/s (left axis) and p50/p95/p99 latency (right axis) against time, one point a second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, rps_axis = plt.subplots(figsize=(9, 4), dpi=100)
    seconds = [point["t"] for point in timeline]
    rps_axis.plot(seconds, [point["rps"] for point in timeline], color="tab:blue", label="requests/s", linewidth=2)
    rps_axis.set_ylim(bottom=0)
    latency_axis = rps_axis.twinx()
    for key, colour in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
        latency_axis.plot(seconds, [point[key] for point in timeline], color=colour, label=key, linewidth=1)
    latency_axis.set_ylim(bottom=0)
    latency_axis.set_ylabel("latency (ms)")
    handles = rps_axis.get_legend_handles_labels()[0] + latency_axis.get_legend_handles_labels()[0]
    labels = rps_axis.get_legend_handles_labels()[1] + latency_axis.get_legend_handles_labels()[1]
    rps_axis.legend(handles, labels, loc="lower right", fontsize=8)
    rps_axis.set_xlabel("seconds")
    rps_axis.set_ylabel("requests/s")
    rps_axis.set_title("Throughput and latency percentiles over time")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def capacity_png(curve: list[dict], slo_ms: list[tuple[str, float]], held: float | None) -> bytes:
    """p50/p95/p99 against the offered rate, one point per step; SLO latency limits as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(9, 4), dpi=100)
    rates = [point["rate"] for point in curve]
    for key, colour in (("p50_ms", "tab:green"), ("p95_ms", "tab:orange"), ("p99_ms", "tab:red")):
        axis.plot(rates, [point[key] for point in curve], marker="o", color=colour, label=key[:-3], linewidth=1)
    for point in curve:
        if not point["passed"]:
            axis.plot(point["rate"], point["p99_ms"], marker="x", color="black", markersize=9)
    for text, limit in slo_ms:
        axis.axhline(limit, color="grey", linestyle="--", linewidth=1)
        axis.annotate(text, (rates[-1] if rates else 0, limit), fontsize=8, color="grey", va="bottom", ha="right")
    if held is not None:
        axis.axvline(held, color="tab:blue", linestyle=":", linewidth=1.5, label=f"held: {held:g} req/s")
    axis.set_yscale("log")
    axis.set_xlabel("offered rate (requests/s, open loop)")
    axis.set_ylabel("latency from scheduled send (ms)")
    axis.set_title("Latency against arrival rate (x: the SLO broke)")
    axis.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_report(report_dir: Path, summary: dict) -> None:
    """summary.json, chart.png (capacity.png for a capacity search) and summary.html, charts embedded."""
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    png = chart_png(summary.get("timeline", []))
    (report_dir / "chart.png").write_bytes(png)
    capacity_b64 = None
    if summary.get("capacity"):
        from sandbox.loadtest.slo import parse_slo

        capacity = summary["capacity"]
        limits = [(o.text, o.threshold) for o in parse_slo(capacity["slo"]) if o.metric.startswith("p")]
        capacity_chart = capacity_png(capacity["curve"], limits, capacity["held_rps"])
        (report_dir / "capacity.png").write_bytes(capacity_chart)
        capacity_b64 = base64.b64encode(capacity_chart).decode()
    (report_dir / "summary.html").write_text(_html(summary, base64.b64encode(png).decode(), capacity_b64))


def _html(summary: dict, png_b64: str, capacity_b64: str | None = None) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sandbox.loadtest", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return env.get_template("summary.html.j2").render(s=summary, chart=png_b64, capacity_chart=capacity_b64)
