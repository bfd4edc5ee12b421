"""Pass/fail rules for a load test run; each returns a result that says what it measured.

Balance is judged with Pearson's chi-square goodness-of-fit test against an even split: it
accepts the random spread that kube-proxy's per-connection choice produces, yet flags a
replica that gets visibly less or more than its share once a few hundred requests are in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy.stats import chisquare


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"[{'PASS' if self.passed else 'FAIL'}] {self.name}: {self.detail}"


def failure_ratio_gate(failures: int, requests: int, max_ratio: float) -> GateResult:
    if requests == 0:
        return GateResult("failure ratio", False, "no request was made")
    ratio = failures / requests
    return GateResult(
        "failure ratio",
        ratio < max_ratio,
        f"{failures}/{requests} = {ratio:.3%} (must be below {max_ratio:.1%})",
    )


def latency_gate(percentile: str, measured_ms: float, limit_ms: float) -> GateResult:
    passed = not math.isnan(measured_ms) and measured_ms <= limit_ms
    return GateResult(
        f"{percentile} latency", passed, f"{measured_ms:.0f} ms (limit {limit_ms:.0f} ms)"
    )


def format_tally(tally: Mapping[str, int]) -> str:
    total = sum(tally.values())
    return ", ".join(
        f"{replica}: {count} ({count / total:.1%})" for replica, count in sorted(tally.items())
    )


def max_relative_deviation(tally: Mapping[str, int]) -> float:
    """The largest |count - mean| / mean over replicas; 0 is a perfectly even split."""
    mean = sum(tally.values()) / len(tally)
    return max(abs(count - mean) / mean for count in tally.values())


def balance_gate(tally: Mapping[str, int], expected_replicas: int, alpha: float) -> GateResult:
    """Every expected replica served, and the spread is consistent with an even split."""
    name = "balance"
    if sum(tally.values()) == 0:
        return GateResult(name, False, "no successful request named its replica")
    if len(tally) != expected_replicas:
        return GateResult(
            name,
            False,
            f"{len(tally)} replicas served, expected {expected_replicas}: {format_tally(tally)}",
        )
    if expected_replicas == 1:
        return GateResult(name, True, f"a single replica served everything: {format_tally(tally)}")
    p_value = float(chisquare(list(tally.values())).pvalue)
    return GateResult(
        name,
        p_value >= alpha,
        f"{format_tally(tally)}; max deviation from the mean "
        f"{max_relative_deviation(tally):.1%}; chi-square p = {p_value:.3g} "
        f"(even split rejected below {alpha:g})",
    )
