"""The `python -m` tools' help: usage names the command a user types, every option says what it
does, and every option with a value states its default."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from harness import cli
from tests.conftest import REPO_ROOT
from tests.support.cli_help import option_help, undocumented

# Run by path in another environment (MLServer's, the image build's), with no options of theirs.
NOT_PYTHON_M_TOOLS = {"benchmarks/peers/mlserver_repository.py", "image/build-env/install-uv.py"}
TOOL_PACKAGES = ("benchmarks", "loadtest", "harness", "image")
# Importing locust patches the importer's sockets with gevent: these are asked in a subprocess.
IMPORTS_LOCUST = {"loadtest.locustfile"}


def python_m_tools() -> list[str]:
    tools = []
    for package in TOOL_PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT).as_posix()
            if relative not in NOT_PYTHON_M_TOOLS and '__name__ == "__main__"' in path.read_text():
                tools.append(relative.removesuffix(".py").replace("/", "."))
    return tools


def test_the_tools_are_found() -> None:
    assert {"loadtest.run", "benchmarks.run", "benchmarks.v2", "benchmarks.cpu_by_layer"} <= set(
        python_m_tools()
    )


def entry_point(module: str) -> Callable[[list[str]], object]:
    loaded = importlib.import_module(module)
    return getattr(loaded, "parse_args", None) or loaded.main


@pytest.mark.parametrize("module", sorted(set(python_m_tools()) - IMPORTS_LOCUST))
def test_every_tool_names_its_command_and_documents_each_option(
    module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    made: list[argparse.ArgumentParser] = []

    def recording_parser(name: str, description: str, *args: Any) -> argparse.ArgumentParser:
        made.append(original(name, description, *args))
        return made[-1]

    original = cli.parser
    monkeypatch.setattr(cli, "parser", recording_parser)
    with pytest.raises(SystemExit) as exit_info:
        entry_point(module)(["--help"])
    assert exit_info.value.code == 0
    (parser,) = made
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"usage: python -m {module} "), help_text[:200]
    assert not undocumented(parser, help_text)


def test_loadtest_run_help_shows_the_command_as_typed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.run", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.startswith("usage: python -m loadtest.run [-h]")
    assert option_help(result.stdout)["--observe"].endswith("(default: 6.0)")


# What `python -m loadtest.locustfile --help` should list: every option the locustfile adds to
# locust's command line, as locust itself builds that command line.
LOCUSTFILE_OPTIONS = """
import json
from locust import argument_parser
from loadtest import locustfile
from tests.support.cli_help import undocumented

parser = argument_parser.get_parser()
group = next(group for group in parser._action_groups if group.title == "iris load test")
print(json.dumps({
    "options": {action.option_strings[-1]: action.env_var for action in group._group_actions},
    "undocumented": undocumented(locustfile.help_parser(), locustfile.help_parser().format_help()),
}))
"""


def test_the_locustfile_options_are_listed_with_their_variables_and_defaults() -> None:
    """`locust --help` prints before it reads a locustfile, so the load test's own options are
    listed by `python -m loadtest.locustfile --help`: all of them, each with its LOCUST_*
    variable and default."""
    # Both at once: each spends seconds importing locust.
    typed, asked = (
        subprocess.Popen(
            [sys.executable, *arguments],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for arguments in (["-m", "loadtest.locustfile", "--help"], ["-c", LOCUSTFILE_OPTIONS])
    )
    (help_text, typed_errors), (answer, asked_errors) = (
        typed.communicate(timeout=120),
        asked.communicate(timeout=120),
    )
    assert typed.returncode == 0, typed_errors
    assert asked.returncode == 0, asked_errors
    assert help_text.startswith("usage: python -m loadtest.locustfile [-h]")
    found = json.loads(answer.splitlines()[-1])
    assert found["undocumented"] == []
    assert len(found["options"]) > 10
    listed = option_help(help_text)
    for option, variable in found["options"].items():
        assert f"[env var: {variable}]" in listed[option], listed[option]


def test_the_help_states_defaults_that_say_something_once() -> None:
    parser = cli.parser("tool", "A tool.")
    parser.add_argument("--rounds", type=int, default=5, help="rounds to run")
    parser.add_argument("--smoke", action="store_true", help="a short run")
    parser.add_argument("--no-faults", dest="faults", action="store_false", help="steady only")
    parser.add_argument("--output", help="also write here")
    parser.add_argument("--run-id", default="3f2a", help="label (default: a random one)")
    blocks = option_help(parser.format_help())
    assert blocks["--rounds"] == "rounds to run (default: 5)"
    assert blocks["--smoke"] == "a short run"
    assert blocks["--no-faults"] == "steady only"
    assert blocks["--output"] == "also write here"
    assert blocks["--run-id"] == "label (default: a random one)"
    assert re.match(r"usage: python -m tool \[-h\]", parser.format_usage())


def test_an_option_without_its_default_is_reported() -> None:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--rounds", type=int, default=5, help="rounds to run")
    parser.add_argument("--seconds", type=int, default=5)
    assert undocumented(parser, parser.format_help()) == [
        "--rounds: 'rounds to run'",
        "--seconds: ''",
    ]
