"""Summarise benchmark rounds: medians per server, ratios to the FastAPI baseline, a chart."""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display where benchmarks run
import matplotlib.pyplot as plt

from benchmarks.measure import LoadSettings, RoundResult

METRICS = (
    # key, heading, format, better when higher
    ("single_rps", "single req/s", "{:,.0f}", True),
    ("single_p50_ms", "p50 ms", "{:.2f}", False),
    ("single_p99_ms", "p99 ms", "{:.2f}", False),
    ("cpu_us_per_request", "CPU us/req", "{:,.0f}", False),
    ("flowers_per_second", "flowers/s (batch)", "{:,.0f}", True),
    ("flowers_per_cpu_second", "flowers/CPU-s", "{:,.0f}", True),
    ("rss_mb", "RSS MB", "{:.0f}", False),
    ("pss_mb", "PSS MB", "{:.0f}", False),
    ("cold_start_s", "cold start s", "{:.2f}", False),
    ("cold_start_cpu_s", "start CPU s", "{:.2f}", False),
)

RATIOS = (
    ("single_rps", "single req/s"),
    ("single_p99_ms", "p99"),
    ("cpu_us_per_request", "CPU per req"),
    ("flowers_per_second", "flowers/s"),
    ("flowers_per_cpu_second", "flowers/CPU-s"),
    ("rss_mb", "RSS"),
    ("cold_start_s", "cold start"),
    ("cold_start_cpu_s", "start CPU"),
)


@dataclass(frozen=True)
class Target:
    description: str
    met: bool
    measured: str


def medians(results: list[RoundResult]) -> dict[str, dict[str, float]]:
    by_server: dict[str, list[dict[str, object]]] = {}
    for result in results:
        by_server.setdefault(result.server, []).append(result.as_dict())
    return {
        server: {key: median_of(row[key] for row in rows) for key, *_ in METRICS}
        for server, rows in by_server.items()
    }


def median_of(values: Iterable[object]) -> float:
    """Median of the figures that were measured; NaN when none was (PSS on some machines)."""
    measured = [float(value) for value in values if value is not None]
    return statistics.median(measured) if measured else float("nan")


def cell(fmt: str, value: float) -> str:
    return "n/a" if math.isnan(value) else fmt.format(value)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def paired_ratios(results: list[RoundResult], server: str, reference: str) -> dict[str, float]:
    """Median over the rounds of each round's ratio of `server` to `reference`.

    The servers of a round run back to back, so each ratio compares runs made while the
    machine was in the same state; the ratio of the medians mixes rounds and can differ.
    """
    by_round: dict[int, dict[str, dict[str, object]]] = {}
    for result in results:
        by_round.setdefault(result.round_index, {})[result.server] = result.as_dict()
    pairs = [row for row in by_round.values() if server in row and reference in row]
    if not pairs:
        return {}
    return {
        key: statistics.median(
            ratio(float(pair[server][key]), float(pair[reference][key])) for pair in pairs
        )
        for key, _ in RATIOS
    }


def round_ratios(results: list[RoundResult], server: str, reference: str, key: str) -> list[float]:
    """Each round's ratio of `server` to `reference` in `key`, in round order."""
    by_round: dict[int, dict[str, dict[str, object]]] = {}
    for result in results:
        by_round.setdefault(result.round_index, {})[result.server] = result.as_dict()
    return [
        ratio(float(row[server][key]), float(row[reference][key]))
        for _, row in sorted(by_round.items())
        if server in row and reference in row
    ]


# The aim for the service against the bare ASGI app on the same uvicorn.
CEILING_TARGET = 0.4


def ceiling_lines(results: list[RoundResult], service: str, ceiling: str) -> list[str]:
    """The service's single-flower rate as a share of the ceiling's, paired per round."""
    rates = round_ratios(results, service, ceiling, "single_rps")
    if not rates:
        return []
    # The same share in CPU time: steadier than the rates where other work shares the CPU.
    cpu = round_ratios(results, ceiling, service, "cpu_us_per_request")
    rows = []
    for label, values in (
        (f"single-flower req/s, `{service}` / `{ceiling}`", rates),
        (f"CPU per request, `{ceiling}` / `{service}`", cpu),
    ):
        median = statistics.median(values)
        verdict = "met" if median >= CEILING_TARGET else "missed"
        shown = ", ".join(f"{value:.2f}" for value in values)
        rows.append(f"| {label} | {median:.2f}x | {shown} | {CEILING_TARGET:.1f}x | {verdict} |")
    return [
        "",
        f"The ceiling: `{service}` against `{ceiling}`, the least an ASGI app on the same "
        "uvicorn does for a flower, paired per round:",
        "",
        "| ratio | median | rounds | target | verdict |",
        "| --- | ---: | --- | ---: | --- |",
        *rows,
    ]


# What a setting's row shows, each a paired ratio to the service with the setting off.
SETTING_RATIOS = (
    ("single_rps", "single req/s"),
    ("single_p99_ms", "p99"),
    ("cpu_us_per_request", "CPU per req"),
    ("flowers_per_second", "flowers/s"),
)


def setting_lines(
    results: list[RoundResult], service: str, settings: Iterable[str], descriptions: dict[str, str]
) -> list[str]:
    """Each setting's server against the service with the setting off, paired per round."""
    rows = []
    for server in settings:
        per_round = {key: round_ratios(results, server, service, key) for key, _ in SETTING_RATIOS}
        if not per_round["single_rps"]:
            continue
        cells = [f"{statistics.median(per_round[key]):.3f}x" for key, _ in SETTING_RATIOS]
        rates = ", ".join(f"{value:.3f}" for value in per_round["single_rps"])
        cpu = ", ".join(f"{value:.3f}" for value in per_round["cpu_us_per_request"])
        what = descriptions.get(server, server)
        rows.append(f"| `{server}`: {what} | " + " | ".join(cells) + f" | {rates} | {cpu} |")
    if not rows:
        return []
    return [
        "",
        f"Settings, each against `{service}` as it ships, paired per round (below 1x for req/s "
        "and flowers/s, above 1x for p99 and CPU per request, is what the setting costs):",
        "",
        "| setting | "
        + " | ".join(heading for _, heading in SETTING_RATIOS)
        + " | req/s per round | CPU per req per round |",
        "| --- | " + " | ".join("---:" for _ in SETTING_RATIOS) + " | --- | --- |",
        *rows,
    ]


def cpu_busy_share(result: RoundResult) -> float:
    """Share of the time the server's process tree was on a CPU during the single-flower load:
    CPU time per request times requests per second."""
    return result.cpu_us_per_request * result.single.requests_per_second / 1e6


# The service's aims (benchmarks/README.md#the-last-run): a multiple of the hand-written
# server's single-flower rate, and batches no slower than the fastest this benchmark saw before
# the model moved to ONNX Runtime.
SINGLE_SPEEDUP_TARGET = 2.5
BATCH_FLOWERS_TARGET = 320_000


def targets(summary: dict[str, dict[str, float]], service: str, reference: str) -> list[Target]:
    """The issue's targets for the service, judged on medians."""
    ours, theirs = summary.get(service), summary.get(reference)
    if ours is None:
        return []
    checks = []
    if theirs is not None:
        speed = ratio(ours["single_rps"], theirs["single_rps"])
        p99 = ratio(ours["single_p99_ms"], theirs["single_p99_ms"])
        checks.append(
            Target(
                f"single-flower req/s >= {SINGLE_SPEEDUP_TARGET}x FastAPI",
                speed >= SINGLE_SPEEDUP_TARGET,
                f"{speed:.2f}x",
            )
        )
        checks.append(Target("single-flower p99 <= FastAPI's", p99 <= 1.0, f"{p99:.2f}x"))
    flowers = ours["flowers_per_second"]
    checks.append(
        Target(
            f"batch >= {BATCH_FLOWERS_TARGET:,} flowers/s",
            flowers >= BATCH_FLOWERS_TARGET,
            f"{flowers:,.0f}",
        )
    )
    checks.append(Target("RSS <= 300 MB", ours["rss_mb"] <= 300, f"{ours['rss_mb']:.0f} MB"))
    cold = ours["cold_start_s"]
    checks.append(Target("cold start <= 5 s", cold <= 5, f"{cold:.2f} s"))
    return checks


def machine_lines(settings: LoadSettings) -> list[str]:
    cpu_model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gib = 0.0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        first = meminfo.read_text().splitlines()[0].split()
        memory_gib = int(first[1]) / 2**20
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("bentoml", "fastapi", "uvicorn", "scikit-learn", "numpy")
    )
    return [
        f"- CPU: {cpu_model}, {os.cpu_count()} CPUs, {memory_gib:.0f} GiB memory",
        f"- OS: {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- Packages: {versions}",
        f"- Server pinned to CPU {settings.server_cpus}, wrk pinned to CPU {settings.load_cpus}",
    ]


def render_markdown(
    results: list[RoundResult],
    settings: LoadSettings,
    *,
    command: str,
    rounds: int,
    when: str,
    service: str,
    reference: str,
    chart_name: str,
    descriptions: dict[str, str] | None = None,
    ceiling: str | None = None,
    paired_settings: Iterable[str] = (),
) -> str:
    summary = medians(results)
    servers = list(summary)
    lines = [
        "# Benchmark results",
        "",
        f"Generated {when} by `{command}`.",
        "",
        *machine_lines(settings),
        *(f"- `{name}`: {text}" for name, text in (descriptions or {}).items()),
        f"- Load: {rounds} round(s), servers alternated in a rotating order each round; "
        f"{settings.single_seconds:g} s of single-flower requests over "
        f"{settings.single_connections} connections (after {settings.warmup_seconds:g} s warm-up), "
        f"then {settings.batch_seconds:g} s of {settings.batch_rows}-row batches over "
        f"{settings.batch_connections} connections; each server started afresh every round.",
        "",
        "Medians over the rounds. RSS and PSS are summed over the server's whole process tree "
        "after the load; cold start is from launch to the first 200 from its readiness URL, and "
        "start CPU is the CPU time the tree spent getting there. CPU us/req and flowers/CPU-s "
        "divide the server's CPU time during the load by the work done.",
        "",
        cpu_column_note(results),
        "",
        "| server | " + " | ".join(heading for _, heading, *_ in METRICS) + " |",
        "| --- | " + " | ".join("---:" for _ in METRICS) + " |",
    ]
    for server in servers:
        cells = [cell(fmt, summary[server][key]) for key, _, fmt, _ in METRICS]
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    if reference in summary:
        lines += [
            "",
            f"Ratios to `{reference}` (higher is better for throughput, lower for the rest):",
            "",
        ]
        lines += [
            "| server | " + " | ".join(heading for _, heading in RATIOS) + " |",
            "| --- | " + " | ".join("---:" for _ in RATIOS) + " |",
        ]
        base = summary[reference]
        for server in servers:
            row = summary[server]
            cells = [f"{ratio(row[key], base[key]):.2f}x" for key, _ in RATIOS]
            lines.append(f"| {server} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Paired: the median over the rounds of each round's ratio to `{reference}` (a "
            "round's servers run back to back, so each ratio compares runs made under the same "
            "conditions; the ratios above divide medians taken from different rounds):",
            "",
            "| server | " + " | ".join(heading for _, heading in RATIOS) + " |",
            "| --- | " + " | ".join("---:" for _ in RATIOS) + " |",
        ]
        for server in servers:
            paired = paired_ratios(results, server, reference)
            if paired:
                cells = [f"{paired[key]:.2f}x" for key, _ in RATIOS]
                lines.append(f"| {server} | " + " | ".join(cells) + " |")
    if ceiling is not None:
        lines += ceiling_lines(results, service, ceiling)
    lines += setting_lines(results, service, paired_settings, descriptions or {})
    checks = targets(summary, service, reference)
    if checks:
        lines += [
            "",
            f"Targets for `{service}`:",
            "",
            "| target | measured | met |",
            "| --- | ---: | --- |",
        ]
        lines += [
            f"| {c.description} | {c.measured} | {'yes' if c.met else 'NO'} |" for c in checks
        ]
    failures = sum(result.single.failed + result.batch.failed for result in results)
    lines += [
        "",
        "Every round, per server:",
        "",
        "| round | server | single req/s | p99 ms | flowers/s | RSS MB | cold start s |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        lines.append(
            f"| {result.round_index} | {result.server} | {result.single.requests_per_second:,.0f} "
            f"| {result.single.p99_ms:.2f} | {result.flowers_per_second:,.0f} "
            f"| {result.rss_mb:.0f} | {result.cold_start_s:.2f} |"
        )
    lines += [
        "",
        f"Failed requests (errors, timeouts, non-2xx) over all rounds: {failures}.",
        "",
        f"![chart]({chart_name})",
        "",
    ]
    return "\n".join(lines)


# A server whose CPU is busy this share of the time or more is saturated by the load.
SATURATED = 0.95


def cpu_column_note(results: list[RoundResult]) -> str:
    """What the CPU us/req column means in this run, from how busy the servers were."""
    shares = [cpu_busy_share(result) for result in results]
    if not shares:
        return ""
    busy = f"{min(shares):.1%} to {max(shares):.1%} of the single-flower phase"
    if min(shares) >= SATURATED:
        return (
            f"Under wrk's closed-loop load each server kept its pinned CPU busy {busy} in every "
            "round, so CPU us/req is 1e6 / (req/s) within that margin: the same figure as the "
            "rate, moving with it. CPU per request apart from throughput would need a fixed "
            "request rate below saturation, which this benchmark does not run."
        )
    return (
        f"The servers' CPU was busy {busy} (CPU us/req times req/s): other work shared the "
        "pinned CPU and held the rates down. CPU us/req counts the server's own CPU time only, "
        "so it moves less than the rates with such load; in a round at 100 % it is "
        "1e6 / (req/s)."
    )


def render_chart(results: list[RoundResult], path: Path, *, service: str, reference: str) -> None:
    summary = medians(results)
    servers = list(summary)
    panels = (
        ("single_rps", "single-flower requests/s"),
        ("flowers_per_second", "flowers/s, 1,000-row batches"),
        ("single_p99_ms", "single-flower p99 latency, ms"),
        ("rss_mb", "resident memory, MB (whole tree)"),
        ("cold_start_s", "cold start to ready, s"),
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.6))
    colours = [
        "#2b8cbe" if name == service else "#737373" if name == reference else "#bdbdbd"
        for name in servers
    ]
    for axis, (key, title) in zip(axes, panels, strict=True):
        values = [summary[name][key] for name in servers]
        bars = axis.bar(servers, values, color=colours)
        axis.set_title(title, fontsize=10)
        axis.tick_params(axis="x", labelrotation=20, labelsize=8)
        for bar, value in zip(bars, values, strict=True):
            axis.annotate(
                f"{value:,.0f}" if value >= 10 else f"{value:.2f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    figure.suptitle("iris classifier, one CPU per server (medians over rounds)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
