"""The CPUs the benchmarks pin a server and its load generator to, with `taskset -c`.

Only the CPUs in this process's affinity mask can be used: a container, a cgroup cpuset or a
parent's `taskset` may leave out CPU 0 or 1, and `taskset -c` then fails. The defaults are
the first two CPUs of the mask; explicit lists are checked against it before any server starts.
"""

from __future__ import annotations

import argparse
import os


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def parse_cpu_list(text: str) -> set[int]:
    """The CPUs of a `taskset -c` list such as `0`, `2,3` or `0-3`."""
    cpus: set[int] = set()
    for item in text.split(","):
        first, _, last = item.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"{text!r} is not a CPU list (such as 0, 2,3 or 0-3)")
        low, high = int(first), int(last or first)
        if high < low:
            raise ValueError(f"{item.strip()!r} in {text!r} runs backwards")
        cpus.update(range(low, high + 1))
    return cpus


def add_pinning_arguments(parser: argparse.ArgumentParser) -> None:
    """--server-cpus and --load-cpus, defaulting to the first two CPUs this process may use."""
    allowed = allowed_cpus()
    server, load = (str(cpu) for cpu in allowed[:2]) if len(allowed) >= 2 else ("?", "?")
    parser.add_argument(
        "--server-cpus",
        help=f"taskset CPU list for the server (default: {server}, the first CPU allowed here)",
    )
    parser.add_argument(
        "--load-cpus",
        help=f"taskset CPU list for wrk (default: {load}, the second CPU allowed here)",
    )


def resolve_pinning(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill in the default CPUs and refuse, through `parser`, a list taskset could not apply."""
    allowed = allowed_cpus()
    if args.server_cpus is None or args.load_cpus is None:
        if len(allowed) < 2:
            parser.error(
                f"this process may run on CPU {allowed[0]} only (its affinity mask), so the "
                "server and wrk cannot have a CPU each; pass --server-cpus and --load-cpus to "
                "share it, knowing the figures then measure both at once"
            )
        args.server_cpus = args.server_cpus or str(allowed[0])
        args.load_cpus = args.load_cpus or str(allowed[1])
    for option, text in (("--server-cpus", args.server_cpus), ("--load-cpus", args.load_cpus)):
        try:
            outside = sorted(parse_cpu_list(text) - set(allowed))
        except ValueError as error:
            parser.error(f"{option}: {error}")
        if outside:
            parser.error(
                f"{option} {text}: CPU {', '.join(map(str, outside))} is not in this process's "
                f"affinity mask ({', '.join(map(str, allowed))})"
            )
