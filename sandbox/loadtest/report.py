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


def write_report(report_dir: Path, summary: dict) -> None:
    """summary.json, chart.png and summary.html (chart embedded) into ``report_dir``."""
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    png = chart_png(summary.get("timeline", []))
    (report_dir / "chart.png").write_bytes(png)
    (report_dir / "summary.html").write_text(_html(summary, base64.b64encode(png).decode()))


def _html(summary: dict, png_b64: str) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sandbox.loadtest", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return env.get_template("summary.html.j2").render(s=summary, chart=png_b64)
