"""The iris files people have, recognised by their header, and a mapping for any other layout.

- this project's layout: `sepal_length,sepal_width,petal_length,petal_width,species`;
- UCI's `iris.data`: no header, the four measurements then `Iris-setosa`-style labels;
- Kaggle's `Iris.csv`: `Id,SepalLengthCm,SepalWidthCm,PetalLengthCm,PetalWidthCm,Species`;
- anything else through `--columns sepal_length=SL,...,species=Kind`, other columns ignored.

A file that matches none keeps the plain refusal naming the missing and unexpected columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from iris_classifier.flowers import FEATURE_NAMES

SPECIES_COLUMN = "species"
REQUIRED_COLUMNS = (*FEATURE_NAMES, SPECIES_COLUMN)
KAGGLE_COLUMNS = {
    "SepalLengthCm": "sepal_length",
    "SepalWidthCm": "sepal_width",
    "PetalLengthCm": "petal_length",
    "PetalWidthCm": "petal_width",
    "Species": SPECIES_COLUMN,
}
KAGGLE_ROW_ID = "Id"


class LayoutError(ValueError):
    """The header names columns a mapping asks for but the file does not have."""


@dataclass(frozen=True)
class Layout:
    name: str
    # The required column each file column holds, or None for a column that is ignored.
    columns: list[str | None]
    has_header: bool


def parse_column_mapping(text: str) -> dict[str, str]:
    """`sepal_length=SL,...` as {required column: file column}; every required one, once."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, separator, column = (piece.strip() for piece in item.partition("="))
        if not separator or not column:
            raise ValueError(f"{item!r} is not NAME=COLUMN")
        if name not in REQUIRED_COLUMNS:
            raise ValueError(f"{name!r} is not one of {list(REQUIRED_COLUMNS)}")
        if name in mapping:
            raise ValueError(f"{name!r} is mapped twice")
        mapping[name] = column
    missing = [name for name in REQUIRED_COLUMNS if name not in mapping]
    if missing:
        raise ValueError(f"no column given for {missing}")
    return mapping


def recognise(header: Sequence[str], mapping: Mapping[str, str] | None = None) -> Layout:
    """The layout of a file whose first line splits into `header` (stripped fields)."""
    if mapping is not None:
        absent = sorted(set(mapping.values()) - set(header))
        if absent:
            raise LayoutError(
                f"--columns names columns the file does not have: {absent}; its header is "
                f"{list(header)}"
            )
        by_column = {column: name for name, column in mapping.items()}
        return Layout("--columns", [by_column.get(column) for column in header], True)
    if set(header) - {KAGGLE_ROW_ID} == set(KAGGLE_COLUMNS) and len(set(header)) == len(header):
        return Layout("Kaggle Iris.csv", [KAGGLE_COLUMNS.get(column) for column in header], True)
    if len(header) == len(REQUIRED_COLUMNS) and _is_uci_row(header):
        return Layout("UCI iris.data", list(REQUIRED_COLUMNS), False)
    return Layout("header", list(header), True)


def _is_uci_row(fields: Sequence[str]) -> bool:
    """A first line that is already data: four numbers and a word."""
    try:
        [float(value) for value in fields[:4]]
    except ValueError:
        return False
    try:
        float(fields[4])
    except ValueError:
        return bool(fields[4])
    return False
