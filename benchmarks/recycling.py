"""What connection recycling costs: single-flower throughput with recycling at several request
budgets against recycling off, paired.

    .venv/bin/python -m benchmarks.recycling --budgets 100,1000 --rounds 5 --seconds 8

One `bentoml serve` per setting, each pinned to the server CPU (`--server-cpus`) and started
before any load, then in every round each is loaded in turn (the order rotating) by wrk on the
load CPU (`--load-cpus`) with 8 kept-alive
connections; wrk opens a new connection whenever an answer closes one. The time limit is off
unless `--max-seconds` sets one for the recycling servers. A setting's figure is the median
over rounds of its rate divided by the rate of recycling off in the same round. On a shared machine
the rate moves with whatever else runs, so the servers' own CPU time per request (their whole
process tree, over each load) is printed beside it: waiting for a core does not change it.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.loadgen import run_wrk
from benchmarks.measure import tree_cpu_seconds
from harness import cli
from harness.cpus import add_pinning_arguments, resolve_pinning
from harness.processes import bentoml_serve_command, private_bentoml_home, running_on_free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
OFF = 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = cli.parser("benchmarks.recycling", __doc__.splitlines()[0])
    parser.add_argument(
        "--budgets", default="100,1000", help="requests per connection to compare, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each loads every server")
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="length of each wrk load, in seconds"
    )
    parser.add_argument("--connections", type=int, default=8, help="wrk's kept-alive connections")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=0.0,
        help="IRIS_CONNECTION_MAX_SECONDS of the recycling servers (off: 0)",
    )
    add_pinning_arguments(parser)
    args = parser.parse_args(argv)
    resolve_pinning(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    budgets = [int(budget) for budget in args.budgets.split(",")] + [OFF]

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recycling-")))
        urls: dict[int, str] = {}
        processes: dict[int, int] = {}
        for budget in budgets:
            home = private_bentoml_home(work / f"home-{budget}")
            env = {
                "BENTOML_HOME": str(home),
                "IRIS_CONNECTION_MAX_REQUESTS": str(budget),
                "IRIS_CONNECTION_MAX_SECONDS": str(args.max_seconds if budget != OFF else 0),
            }
            process, urls[budget] = stack.enter_context(
                running_on_free_port(
                    lambda port: ["taskset", "-c", args.server_cpus, *bentoml_serve_command(port)],
                    env=env,
                    log_path=work / f"serve-{budget}.log",
                    cwd=REPO_ROOT,
                    timeout=120,
                )
            )
            processes[budget] = process.pid
        rates: dict[int, list[float]] = {budget: [] for budget in budgets}
        cpu_us: dict[int, list[float]] = {budget: [] for budget in budgets}
        for round_number in range(args.rounds):
            shift = round_number % len(budgets)
            for budget in budgets[shift:] + budgets[:shift]:
                # A short warm-up: the first requests pay for imports and JIT-free warm caches.
                run_wrk(urls[budget], "single.lua", seconds=1, connections=2, cpus=args.load_cpus)
                cpu_before = tree_cpu_seconds(processes[budget])
                result = run_wrk(
                    urls[budget],
                    "single.lua",
                    seconds=args.seconds,
                    connections=args.connections,
                    cpus=args.load_cpus,
                )
                if result.failed:
                    raise SystemExit(f"budget {budget}: {result.failed} failed requests")
                rates[budget].append(result.requests_per_second)
                cpu_spent = tree_cpu_seconds(processes[budget]) - cpu_before
                cpu_us[budget].append(cpu_spent / max(1, result.requests) * 1e6)
            print(
                f"round {round_number + 1}: "
                + ", ".join(
                    f"{label(b)} {rates[b][-1]:.0f}/s {cpu_us[b][-1]:.0f} us" for b in budgets
                ),
                flush=True,
            )
    print("requests per connection | req/s ratio to off | CPU us/request ratio to off (paired)")
    for budget in budgets:
        ratios = [rate / off for rate, off in zip(rates[budget], rates[OFF], strict=True)]
        cpu_ratios = [cpu / off for cpu, off in zip(cpu_us[budget], cpu_us[OFF], strict=True)]
        print(
            f"{label(budget):>23} | {statistics.median(ratios):.3f} "
            f"(rounds: {', '.join(f'{r:.3f}' for r in ratios)}) | "
            f"{statistics.median(cpu_us[budget]):.0f} us, {statistics.median(cpu_ratios):.3f} "
            f"(rounds: {', '.join(f'{r:.3f}' for r in cpu_ratios)})"
        )


def label(budget: int) -> str:
    return "off" if budget == OFF else str(budget)


if __name__ == "__main__":
    main()
