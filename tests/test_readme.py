"""The READMEs and docs/ pages: their examples, their links and paths, and the front page's size.

Each `$ curl` line of a `console` block is read as curl reads it (its method, headers and body,
curl's form `Content-Type` when it sets none), sent to the service's ASGI app, and its answer
compared with the output the page prints below it: as JSON when the output is JSON (the
model's tag aside, which changes with every training), as a prefix where the page cuts
the output short with "...", and as text otherwise. The `curl` lines of `bash` blocks and the
Python examples run against a real `bentoml serve`, since `/metrics` needs one.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterator
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


def shell_commands(
    block: str, is_command: Callable[[str], bool] = lambda line: True
) -> Iterator[tuple[str, list[str]]]:
    """Each command of a shell block, continued lines joined, with the lines after it up to the
    next line `is_command` accepts (a console block's output)."""
    lines = block.replace("\\\n", " ").splitlines()
    index = 0
    while index < len(lines):
        command = lines[index]
        index += 1
        # A quoted body may go on over several lines, which the shell keeps in it.
        while command.count("'") % 2 and index < len(lines):
            command += "\n" + lines[index]
            index += 1
        output = []
        while index < len(lines) and not is_command(lines[index]):
            output.append(lines[index])
            index += 1
        yield command, output


def console_examples(page: Path) -> list[Example]:
    examples = []
    for block in CONSOLE_BLOCK.findall(page.read_text()):
        for command, output in shell_commands(block, lambda line: line.startswith("$ ")):
            if command.startswith("$ curl") and SERVICE in command and "|" not in command:
                examples.append(
                    Example(
                        str(page.relative_to(REPO_ROOT)),
                        command[2:].split("  #")[0].strip(),
                        "\n".join(output),
                    )
                )
    return examples


@dataclass(frozen=True)
class CurlRequest:
    """What a `curl` command line sends, read as curl reads it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    prints_status: bool


# curl's options the examples may use, and whether each takes a value.
CURL_FLAGS = {"-s", "--silent", "-S", "--show-error"}
CURL_OPTIONS = {"-H", "--header", "-d", "--data", "--data-raw", "--data-binary", "-X", "-o", "-w"}
DATA_OPTIONS = {"-d", "--data", "--data-raw", "--data-binary"}
# curl's -d without a Content-Type header of the command's own.
CURL_DEFAULT_CONTENT_TYPE = "application/x-www-form-urlencoded"


def parse_curl(command: str) -> CurlRequest:
    """The request a `curl` command sends; an option this reader does not know is an error,
    so an example cannot send something the test did not."""
    words = shlex.split(command)
    assert words[0] == "curl", command
    url, method, body, prints_status = None, None, None, False
    headers: dict[str, str] = {}
    index = 1
    while index < len(words):
        word = words[index]
        if word in CURL_FLAGS:
            index += 1
            continue
        if word in CURL_OPTIONS:
            value = words[index + 1]
            if word in ("-H", "--header"):
                name, _, header_value = value.partition(":")
                headers[name.strip()] = header_value.strip()
            elif word in DATA_OPTIONS:
                # curl reads a file for -d @name; the examples send what they show.
                assert word == "--data-raw" or not value.startswith("@"), command
                body = value.encode() if body is None else body + b"&" + value.encode()
            elif word == "-X":
                method = value
            elif word == "-w":
                prints_status = "%{http_code}" in value
            index += 2
            continue
        assert not word.startswith("-"), f"curl option {word} is not understood: {command}"
        assert url is None, f"two URLs in {command}"
        url = word
        index += 1
    assert url, command
    assert url.startswith(SERVICE), command
    if body is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = CURL_DEFAULT_CONTENT_TYPE
    method = method or ("POST" if body is not None else "GET")
    return CurlRequest(method, url.removeprefix(SERVICE), headers, body, prints_status)


def path_of(command: str) -> str:
    return parse_curl(command).path


def send(client, command: str) -> tuple[int, str]:
    """Status and body of what `command` (a curl call) gets from the service."""
    sent = parse_curl(command)
    response = client.request(sent.method, sent.path, content=sent.body, headers=sent.headers)
    return response.status_code, response.text


def test_curl_sends_a_form_when_the_example_forgets_its_content_type(service_client) -> None:
    forgot = "curl -s localhost:3000/iris/classify_iris -d '{\"sepal_length\": 2}'"
    assert parse_curl(forgot).headers == {"Content-Type": CURL_DEFAULT_CONTENT_TYPE}
    assert send(service_client, forgot)[0] == 415
    with pytest.raises(AssertionError, match="--insecure"):
        parse_curl("curl --insecure localhost:3000/readyz")


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


@pytest.mark.parametrize(
    "example", EXAMPLES, ids=[f"{e.page}: {e.command[:60]}".replace("\n", " ") for e in EXAMPLES]
)
def test_curl_example_gets_the_answer_shown(service_client, example: Example) -> None:
    status, body = send(service_client, example.command)
    shown = example.output.strip()
    if parse_curl(example.command).prints_status:
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


# --- The shell and Python examples -------------------------------------------------------------

BASH_BLOCK = re.compile(r"```bash\n(.*?)```\n*((?:[^\n]+\n?)*)", re.S)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
GREP = re.compile(r"^grep(?: -E)? '([^']+)'$")
# A JSON fragment the prose after a block says the answer holds, as a code span.
JSON_FRAGMENT = re.compile(r"`([^`]*\"[^`]*)`")


@dataclass(frozen=True)
class ShellExample:
    page: str
    command: str
    grep: str | None
    fragments: tuple[str, ...]


def compact(fragment: str) -> str:
    return re.sub(r"([:,])\s+", r"\1", fragment)


def shell_examples(page: Path) -> list[ShellExample]:
    """The `curl` commands of a page's `bash` blocks that call the service, with the `grep`
    they pipe into and the JSON fragments the paragraph after the block quotes."""
    examples = []
    for block, after in BASH_BLOCK.findall(page.read_text()):
        fragments = tuple(compact(span) for span in JSON_FRAGMENT.findall(after.split("\n\n")[0]))
        for command, _ in shell_commands(block):
            if not command.startswith("curl") or SERVICE not in command:
                continue
            command, _, pipe = command.split("  #")[0].partition("|")
            grep = None
            if pipe:
                match = GREP.match(pipe.strip())
                assert match, f"{page}: a pipe this test cannot run: {pipe}"
                grep = match.group(1)
            examples.append(
                ShellExample(str(page.relative_to(REPO_ROOT)), command.strip(), grep, fragments)
            )
    return examples


SHELL_EXAMPLES = [example for page in documentation_pages() for example in shell_examples(page)]


@pytest.mark.parametrize(
    "example",
    SHELL_EXAMPLES,
    ids=[f"{e.page}: {e.command[:60]}".replace("\n", " ") for e in SHELL_EXAMPLES],
)
def test_shell_example_prints_what_the_page_says(live_server: str, example: ShellExample) -> None:
    """Run on the live server: `/metrics` needs a real `bentoml serve`. A `grep` must print a
    line, as it must to exit 0; each quoted fragment must be in the answer."""
    import httpx

    with httpx.Client(base_url=live_server, timeout=30) as client:
        status, body = send(client, example.command)
    assert status == 200, body
    if example.grep:
        assert [line for line in body.splitlines() if re.search(example.grep, line)], body[:2000]
    answer = compact(json.dumps(json.loads(body))) if body.startswith("{") else body
    missing = [fragment for fragment in example.fragments if fragment not in answer]
    assert not missing, answer


def test_the_metrics_examples_are_run() -> None:
    run = {(e.page, e.grep) for e in SHELL_EXAMPLES if e.grep}
    assert ("docs/api.md", "^(bentoml_service_request_total|iris_)") in run
    assert ("docs/monitoring.md", "^iris_") in run


PYTHON_EXAMPLES = [
    (str(page.relative_to(REPO_ROOT)), code)
    for page in documentation_pages()
    for code in PYTHON_BLOCK.findall(page.read_text())
    if SERVICE in code
]


@pytest.mark.parametrize(
    ("page", "code"), PYTHON_EXAMPLES, ids=[page for page, _ in PYTHON_EXAMPLES]
)
def test_python_example_prints_what_its_comments_say(
    live_server: str, tmp_path: Path, page: str, code: str
) -> None:
    """Run as a script against the live server; each `print(...)  # shown` line's comment
    must be a line of what the script printed."""
    import subprocess
    import sys

    script = tmp_path / "example.py"
    script.write_text(code.replace(SERVICE, live_server.removeprefix("http://")))
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    shown = re.findall(r"^print\(.*\)\s+#\s*(.+)$", code, re.M)
    assert shown, f"{page}: no print shows its output"
    printed = run.stdout.splitlines()
    assert [line for line in shown if line not in printed] == [], run.stdout


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
        " `iris_classifier/serving/http/edge.py` `application/json` `$BENTOML_HOME/x` `/iris/model`"
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
