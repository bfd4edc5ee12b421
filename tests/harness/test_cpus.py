"""The benchmarks pin to CPUs this process may run on, never to a fixed CPU 0 and 1."""

from __future__ import annotations

import argparse

import pytest

from harness import cpus


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cpus.add_pinning_arguments(parser)
    args = parser.parse_args(argv)
    cpus.resolve_pinning(parser, args)
    return args


@pytest.fixture
def mask(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """An affinity mask without CPUs 0 and 1, as a cpuset or a parent's taskset can leave."""
    allowed = {2, 5, 6}
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: allowed)
    return allowed


def test_the_defaults_are_the_first_two_cpus_of_the_affinity_mask(mask: set[int]) -> None:
    args = parse([])
    assert (args.server_cpus, args.load_cpus) == ("2", "5")


def test_lists_inside_the_mask_are_kept(mask: set[int]) -> None:
    args = parse(["--server-cpus", "5-6", "--load-cpus", "2"])
    assert (args.server_cpus, args.load_cpus) == ("5-6", "2")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--server-cpus", "0"], "--server-cpus 0: CPU 0 is not in this process's affinity mask"),
        (["--load-cpus", "5-7"], "--load-cpus 5-7: CPU 7 is not in"),
        (["--load-cpus", "two"], "--load-cpus: 'two' is not a CPU list"),
        (["--load-cpus", "6-5"], "runs backwards"),
    ],
)
def test_a_cpu_taskset_could_not_use_is_refused_before_anything_starts(
    mask: set[int], argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(argv)
    assert message in capsys.readouterr().err


def test_one_cpu_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {3})
    with pytest.raises(SystemExit):
        parse([])
    assert "may run on CPU 3 only" in capsys.readouterr().err
    args = parse(["--server-cpus", "3", "--load-cpus", "3"])
    assert (args.server_cpus, args.load_cpus) == ("3", "3")


def test_cpu_lists_read_as_taskset_reads_them() -> None:
    assert cpus.parse_cpu_list("0") == {0}
    assert cpus.parse_cpu_list("1,3-5") == {1, 3, 4, 5}
