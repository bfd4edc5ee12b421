"""The READMEs and docs/ pages: their `curl` examples, their links, and the front page's size.

Each `$ curl` line of a `console` block is sent to the service's ASGI app and its answer
compared with the output the page prints below it: as JSON when the output is JSON (the
model's tag aside, which changes with every training), as a prefix where the page cuts
the output short with "...", and as text otherwise.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

CONSOLE_BLOCK = re.compile(r"```console\n(.*?)```", re.S)
SERVICE = "localhost:3000"
MODEL_TAG = re.compile(r"iris_classifier:[a-z0-9]+")
# Folders of generated, installed or cached files, whose Markdown is not the project's.
NOT_DOCUMENTATION = {"build", "reports", "node_modules"}
FRONT_README = REPO_ROOT / "README.md"
# "About 10 KB": a newcomer reads the front page in a few minutes; detail goes next to what
# it describes.
FRONT_README_MAX_BYTES = 10 * 1024
# The endpoint families the front page shows one example of, by path prefix.
FRONT_PAGE_FAMILIES = {
    "classification": ("/iris/classify_",),
    "model card": ("/iris/model",),
    "health": ("/readyz", "/livez", "/healthcheck"),
    "Open Inference Protocol": ("/v2/",),
}


def documentation_pages() -> list[Path]:
    """Every Markdown page of the repository, front README first."""
    pages = [
        path
        for path in REPO_ROOT.rglob("*.md")
        if not any(
            part.startswith(".") or part in NOT_DOCUMENTATION or part.endswith(".egg-info")
            for part in path.relative_to(REPO_ROOT).parts[:-1]
        )
    ]
    return sorted(pages, key=lambda path: (path != FRONT_README, str(path)))


@dataclass(frozen=True)
class Example:
    page: str
    command: str
    output: str


def console_examples(page: Path) -> list[Example]:
    examples = []
    for block in CONSOLE_BLOCK.findall(page.read_text()):
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
                examples.append(
                    Example(
                        str(page.relative_to(REPO_ROOT)),
                        command[2:].split("  #")[0].strip(),
                        "\n".join(output),
                    )
                )
    return examples


def path_of(command: str) -> str:
    url = next(word for word in shlex.split(command) if word.startswith(SERVICE))
    return url.removeprefix(SERVICE)


def send(client, command: str) -> tuple[int, str]:
    """Status and body of what `command` (a curl call) gets from the service."""
    words = shlex.split(command)
    path = path_of(command)
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


EXAMPLES = [example for page in documentation_pages() for example in console_examples(page)]


def test_the_front_readme_shows_one_curl_example_per_endpoint_family() -> None:
    paths = [path_of(e.command) for e in EXAMPLES if e.page == "README.md"]
    missing = [
        family
        for family, prefixes in FRONT_PAGE_FAMILIES.items()
        if not any(path.startswith(prefixes) for path in paths)
    ]
    assert not missing, f"README.md shows no curl example for {missing}; it shows {paths}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.page}: {e.command[:60]}" for e in EXAMPLES])
def test_curl_example_gets_the_answer_shown(service_client, example: Example) -> None:
    status, body = send(service_client, example.command)
    shown = example.output.strip()
    if "-w" in shlex.split(example.command):  # the example prints the status code
        assert str(status) == shown
    elif "..." in shown:
        prefix = shown.split("...")[0].rstrip(", ")
        assert MODEL_TAG.sub("<tag>", body).startswith(MODEL_TAG.sub("<tag>", prefix)), body
    else:
        try:
            expected = json.loads(shown)
        except ValueError:
            assert body.strip() == shown
        else:
            assert without_model_tag(json.loads(body)) == without_model_tag(expected)


def test_the_front_readme_stays_a_front_page() -> None:
    size = len(FRONT_README.read_bytes())
    assert size <= FRONT_README_MAX_BYTES, (
        f"README.md is {size} bytes: move detail to the README of the folder it describes"
    )


# --- Links ------------------------------------------------------------------------------------

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)


def prose(text: str) -> str:
    """The page without code blocks and code spans, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(heading) for heading in HEADING.findall(prose(page.read_text()))}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: and the like
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment}")
    return broken


@pytest.mark.parametrize(
    "page", documentation_pages(), ids=lambda page: str(page.relative_to(REPO_ROOT))
)
def test_every_relative_link_resolves(page: Path) -> None:
    assert not broken_links(page)


# A repository path in a code span: names joined by slashes, nothing else (no spaces, `$`, `<`,
# `*` or `:`), whose first name is an entry of the repository's top folder or of the page's
# own folder; so `application/json`, `kubernetes.io/metadata.name` and paths inside a Bento or
# a report folder are not taken for one. Generated folders are not in a fresh clone.
CODE_SPAN = re.compile(r"`([^`\n]+)`")
PATH_LIKE = re.compile(r"^\.?[A-Za-z_][\w.-]*(?:/[\w.-]+)+/?$")
GENERATED = NOT_DOCUMENTATION | {".venv"}


def missing_code_paths(page: Path) -> list[str]:
    missing = []
    for span in CODE_SPAN.findall(FENCE.sub("", page.read_text())):
        first = span.split("/")[0]
        if not PATH_LIKE.match(span) or first in GENERATED:
            continue
        bases = [base for base in (REPO_ROOT, page.parent) if (base / first).exists()]
        if bases and not any((base / span).exists() for base in bases):
            missing.append(span)
    return missing


def test_the_code_path_rule_tells_paths_from_other_slashes(tmp_path: Path) -> None:
    page = REPO_ROOT / "docs" / "api.md"
    fake = tmp_path / "page.md"
    fake.write_text(
        "`iris_classifier/serving/middleware.py` `tests/cluster_stubs.py` `service.py`"
        " `iris_classifier/serving/edge.py` `application/json` `$BENTOML_HOME/x` `/iris/model`"
        " `build/image-ref` `images/missing.png`"
    )
    assert missing_code_paths(fake) == [
        "iris_classifier/serving/middleware.py",
        "tests/cluster_stubs.py",
    ]
    assert missing_code_paths(page) == []


@pytest.mark.parametrize(
    "page", documentation_pages(), ids=lambda page: str(page.relative_to(REPO_ROOT))
)
def test_every_repository_path_in_code_exists(page: Path) -> None:
    assert not missing_code_paths(page)
