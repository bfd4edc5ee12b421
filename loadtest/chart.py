"""A PNG of a run: requests per second per replica, failures, and latency over time.

The picture shows at a glance what the figures say: three even lines while all is well, one
line dropping to zero when its replica dies, the others taking over, and the line coming back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt
import numpy as np

from loadtest.request_log import RequestRecord

BIN_SECONDS = 1.0


def write_chart(
    records: Sequence[RequestRecord],
    path: Path,
    *,
    markers: Sequence[tuple[float, str]] = (),
    title: str = "Load test",
) -> None:
    """Draw `records`; each marker is (epoch seconds, label) drawn as a vertical line."""
    if not records:
        return
    origin = min(record.started for record in records)
    elapsed = np.array([record.started - origin for record in records])
    edges = np.arange(0.0, elapsed.max() + 2 * BIN_SECONDS, BIN_SECONDS)
    centres = edges[:-1]

    figure, (rate_axes, latency_axes) = plt.subplots(
        2, 1, figsize=(11, 7), sharex=True, height_ratios=[3, 2]
    )
    replicas = sorted({record.served_by for record in records if record.served_by})
    # Even balancing draws the lines on top of each other: styles keep each one visible.
    styles = ("-", "--", ":", "-.")
    for index, replica in enumerate(replicas):
        mask = np.array([record.ok and record.served_by == replica for record in records])
        counts, _ = np.histogram(elapsed[mask], bins=edges)
        rate_axes.plot(
            centres, counts / BIN_SECONDS, styles[index % len(styles)], label=replica, linewidth=1.4
        )
    failed = np.array([not record.ok for record in records])
    failures, _ = np.histogram(elapsed[failed], bins=edges)
    rate_axes.bar(
        centres,
        failures / BIN_SECONDS,
        width=BIN_SECONDS,
        align="edge",
        color="tab:red",
        alpha=0.6,
        label="failures",
    )
    rate_axes.set_ylabel("requests/s")
    rate_axes.set_title(title)
    rate_axes.legend(loc="upper right", fontsize="small")

    times = np.array([record.response_time_ms for record in records])
    bin_index = np.digitize(elapsed, edges) - 1
    for quantile, style in ((50, "-"), (95, "--"), (99, ":")):
        series = [
            np.percentile(times[bin_index == index], quantile)
            if np.any(bin_index == index)
            else np.nan
            for index in range(len(centres))
        ]
        latency_axes.plot(centres, series, style, color="black", label=f"p{quantile}")
    latency_axes.set_ylabel("latency (ms)")
    latency_axes.set_xlabel("seconds since the first request")
    latency_axes.set_yscale("log")
    latency_axes.legend(loc="upper right", fontsize="small")

    for when, label in markers:
        for axes in (rate_axes, latency_axes):
            axes.axvline(when - origin, color="grey", linestyle="--", linewidth=0.8)
        rate_axes.annotate(
            label,
            (when - origin, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize="x-small",
            color="dimgrey",
        )

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
