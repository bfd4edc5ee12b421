"""The README's `curl` examples, run against the service: what it shows is what it answers.

Each `$ curl` line of a `console` block is sent to the service's ASGI app and its answer
compared with the output the README prints below it: as JSON when the output is JSON (the
model's tag aside, which changes with every training), as a prefix where the README cuts
the output short with "...", and as text otherwise.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

import pytest

from tests.conftest import REPO_ROOT

CONSOLE_BLOCK = re.compile(r"```console\n(.*?)```", re.S)
SERVICE = "localhost:3000"


@dataclass(frozen=True)
class Example:
    command: str
    output: str


def readme_examples() -> list[Example]:
    examples = []
    for block in CONSOLE_BLOCK.findall((REPO_ROOT / "README.md").read_text()):
        lines = block.replace("\\\n", " ").splitlines()
        index = 0
        while index < len(lines):
            command = lines[index]
            index += 1
            # A quoted body may go on over several lines.
            while command.count("'") % 2 and index < len(lines):
                command += " " + lines[index].strip()
                index += 1
            output = []
            while index < len(lines) and not lines[index].startswith("$ "):
                output.append(lines[index])
                index += 1
            if command.startswith("$ curl") and SERVICE in command and "|" not in command:
                examples.append(Example(command[2:].split("  #")[0].strip(), "\n".join(output)))
    return examples


def send(client, command: str) -> tuple[int, str]:
    """Status and body of what `command` (a curl call) gets from the service."""
    words = shlex.split(command)
    url = next(word for word in words if word.startswith(SERVICE))
    path = url.removeprefix(SERVICE)
    if "-d" in words:
        body = words[words.index("-d") + 1]
        headers = {"Content-Type": "application/json"}
        response = client.post(path, content=body.encode(), headers=headers)
    else:
        response = client.get(path)
    return response.status_code, response.text


def without_model_tag(document: object) -> object:
    if isinstance(document, dict) and "model_version" in document:
        return {**document, "model_version": "iris_classifier:<tag>"}
    return document


EXAMPLES = readme_examples()


def test_the_readme_shows_curl_examples() -> None:
    assert len(EXAMPLES) >= 5, EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.command[:60] for e in EXAMPLES])
def test_readme_curl_example_gets_the_answer_shown(service_client, example: Example) -> None:
    status, body = send(service_client, example.command)
    shown = example.output.strip()
    if "-w" in shlex.split(example.command):  # the example prints the status code
        assert str(status) == shown
    elif "..." in shown:
        assert body.startswith(shown.split("...")[0].rstrip(", ")), body
    else:
        try:
            expected = json.loads(shown)
        except ValueError:
            assert body.strip() == shown
        else:
            assert without_model_tag(json.loads(body)) == without_model_tag(expected)
