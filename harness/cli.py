"""The command line of the `python -m` tools: usage names the command as it is typed, and every
option's help ends with its default."""

from __future__ import annotations

import argparse
from typing import TypeVar


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's own defaults formatter, except for on/off flags and options without a default,
    where "(default: False)" or "(default: None)" would say nothing, and where the help already
    says what the default is (a random run id, what another setting decides)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.nargs == 0 or action.default is None or "(default:" in text:
            return text
        return super()._get_help_string(action) or text


Parser = TypeVar("Parser", bound=argparse.ArgumentParser)


def parser(
    module: str, description: str, parser_class: type[Parser] = argparse.ArgumentParser
) -> Parser:
    """An argument parser for `python -m <module>`, of argparse's class or a subclass of it."""
    return parser_class(
        prog=f"python -m {module}", description=description, formatter_class=DefaultsHelpFormatter
    )
