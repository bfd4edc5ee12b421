"""Run the side-by-side benchmark and write `benchmarks/results/latest.md` and `latest.png`.

    python -m benchmarks.run                  # the full run `make bench` does (a few minutes)
    python -m benchmarks.run --smoke --output /tmp/bench   # seconds; checks the harness works

Each round starts every server afresh pinned to the server CPUs, in an order that rotates from
round to round so that slow drifts of a shared machine spread over all servers; medians over
rounds are reported. The model store is whatever BENTOML_HOME selects.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from benchmarks.loadgen import add_load_arguments
from benchmarks.measure import SERVER_LOG_DIR, LoadSettings, RoundResult, measure_round
from benchmarks.report import render_chart, render_markdown
from benchmarks.servers import (
    ALL_SERVERS,
    BENTOML,
    BENTOML_RANDOM_FOREST,
    CEILING,
    RANDOM_FOREST_HOME_VARIABLE,
    REFERENCE,
    SETTINGS_PAIRED_WITH_SERVICE,
)
from harness import cli
from harness.cpus import add_pinning_arguments, resolve_pinning

logger = logging.getLogger("benchmarks")

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = cli.parser("benchmarks.run", __doc__.splitlines()[0])
    add_load_arguments(
        parser,
        rounds=5,
        seconds=10,
        warmup_help="single-flower warm-up of each server before its loads, in seconds",
    )
    add_pinning_arguments(parser)
    parser.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help=f"comma-separated: {', '.join(ALL_SERVERS)}",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR,
        help="directory the results, tables and charts are written to (default: benchmarks/results)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="one 1-second round: checks the harness, not speed"
    )
    args = parser.parse_args(argv)
    resolve_pinning(parser, args)
    if args.smoke:
        args.rounds, args.seconds, args.warmup = 1, 1, 0
    unknown = set(args.servers.split(",")) - set(ALL_SERVERS)
    if unknown:
        parser.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    if BENTOML_RANDOM_FOREST.name in args.servers.split(",") and not os.environ.get(
        RANDOM_FOREST_HOME_VARIABLE
    ):
        parser.error(
            f"{BENTOML_RANDOM_FOREST.name} needs {RANDOM_FOREST_HOME_VARIABLE}: a BentoML home "
            "holding a random forest (make bench trains one)"
        )
    return args


def run(args: argparse.Namespace, command: str) -> list[RoundResult]:
    settings = LoadSettings(
        single_seconds=args.seconds,
        batch_seconds=args.seconds,
        warmup_seconds=args.warmup,
        single_connections=args.connections,
        batch_connections=args.batch_connections,
        batch_rows=args.batch_rows,
        server_cpus=args.server_cpus,
        load_cpus=args.load_cpus,
    )
    servers = [ALL_SERVERS[name] for name in args.servers.split(",")]
    args.output.mkdir(parents=True, exist_ok=True)
    SERVER_LOG_DIR.mkdir(parents=True, exist_ok=True)
    results = []
    for round_index in range(1, args.rounds + 1):
        shift = (round_index - 1) % len(servers)
        for server in servers[shift:] + servers[:shift]:
            results.append(measure_round(server, round_index, settings, SERVER_LOG_DIR))
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    markdown = render_markdown(
        results,
        settings,
        command=command,
        rounds=args.rounds,
        when=when,
        service=BENTOML.name,
        reference=REFERENCE,
        chart_name="latest.png",
        descriptions={server.name: server.description for server in servers},
        ceiling=CEILING.name,
        paired_settings=SETTINGS_PAIRED_WITH_SERVICE,
    )
    (args.output / "latest.md").write_text(markdown)
    render_chart(results, args.output / "latest.png", service=BENTOML.name, reference=REFERENCE)
    raw = {"settings": asdict(settings), "rounds": [result.as_dict() for result in results]}
    (args.output / "latest.json").write_text(json.dumps(raw, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments = sys.argv[1:] if argv is None else argv
    args = parse_args(arguments)
    command = os.environ.get("BENCH_COMMAND", "").strip() or " ".join(
        ["python -m benchmarks.run", *arguments]
    )
    run(args, command)
    print((args.output / "latest.md").read_text())  # the table is the command's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
