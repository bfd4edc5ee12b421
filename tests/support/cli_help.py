"""Reading an argparse help page the way a user does: one block of text per option."""

from __future__ import annotations

import argparse
import re


def option_help(help_text: str) -> dict[str, str]:
    """Each option's help, unwrapped, by its last option string (`--lb-port`)."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        if re.match(r"^  -", line):
            names = line.split("  ")[1]
            current = [name.split()[0] for name in names.split(", ")][-1]
            blocks[current] = line.strip()[len(names) :].strip()
        elif current and line.startswith("   "):
            blocks[current] = f"{blocks[current]} {line.strip()}".strip()
        else:
            current = None
    return blocks


def undocumented(parser: argparse.ArgumentParser, help_text: str) -> list[str]:
    """Options whose help is missing, or does not state the default a value option has."""
    blocks = option_help(help_text)
    missing = []
    for action in parser._actions:
        if not action.option_strings or action.default is argparse.SUPPRESS:
            continue
        text = blocks[action.option_strings[-1]]
        takes_value = action.nargs != 0
        if not text or (takes_value and action.default is not None and "(default: " not in text):
            missing.append(f"{action.option_strings[-1]}: {text!r}")
    return missing
