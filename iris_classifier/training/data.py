"""Training data: the iris set bundled with scikit-learn, or a CSV checked before any fitting.

A CSV holds the four feature columns in centimetres and a `species` column. Every problem is
reported as a `DataError` whose message names the column, the lines and the values at fault,
so a data scientist can fix the file without reading a traceback.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_iris

from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES, SIZE_RULE, breaks_size_rule
from iris_classifier.training.layouts import LayoutError, recognise

SPECIES_COLUMN = "species"
# Shown at most this many offending lines per problem; the count says how many there are.
MAX_LINES_SHOWN = 5


class DataError(ValueError):
    """The training data cannot be used; the message says why."""


@dataclass(frozen=True)
class TrainingData:
    features: pd.DataFrame
    species: pd.Series
    source: str
    sha256: str

    @property
    def class_names(self) -> list[str]:
        return sorted(str(name) for name in self.species.unique())


def load_bundled() -> TrainingData:
    """The 150-flower iris set shipped inside scikit-learn: no download needed."""
    bunch = load_iris(as_frame=True)
    features = bunch.data.set_axis(list(FEATURE_NAMES), axis="columns")
    species = bunch.target.map(dict(enumerate(bunch.target_names))).rename(SPECIES_COLUMN)
    frame = features.assign(**{SPECIES_COLUMN: species})
    return TrainingData(features, species, "scikit-learn bundled iris", _frame_sha256(frame))


def load_csv(
    path: Path, *, min_rows_per_class: int, columns: Mapping[str, str] | None = None
) -> TrainingData:
    """Read and check a CSV; raise `DataError` naming the first problem found.

    UCI's `iris.data` and Kaggle's `Iris.csv` are recognised by their first line; `columns`
    maps any other layout ({required column: file column}).
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    # pandas renames a repeated column ("a.1"), so the header is checked as written.
    header = [column.strip() for column in next(csv.reader(io.StringIO(text)), [])]
    try:
        layout = recognise(header, columns)
    except LayoutError as exc:
        raise DataError(f"{path}: {exc}") from exc
    _check_columns(path, [name for name in layout.columns if name is not None])
    try:
        # Everything is read as text first so that a stray word is reported, not silently NaN.
        raw = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            header=0 if layout.has_header else None,
        )
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc
    if len(raw.columns) != len(layout.columns):
        raise DataError(
            f"{path}: not a readable CSV file (the first line has {len(layout.columns)} fields, "
            f"the rows {len(raw.columns)})"
        )
    raw.columns = [name or f"ignored {i}" for i, name in enumerate(layout.columns)]
    if raw.empty:
        raise DataError(f"{path}: the header is there but there are no data rows")
    # Indexed by line number in the file, so every message names the lines as an editor does.
    first_line = 2 if layout.has_header else 1
    raw.index = range(first_line, first_line + len(raw))

    features = pd.DataFrame({name: _numeric_column(path, raw, name) for name in FEATURE_NAMES})
    species = _species_column(path, raw)
    _check_classes(path, species, min_rows_per_class)
    features, species = features.reset_index(drop=True), species.reset_index(drop=True)
    frame = features.assign(**{SPECIES_COLUMN: species})
    source = str(path) if layout.name == "header" else f"{path} ({layout.name} layout)"
    return TrainingData(features, species, source, _frame_sha256(frame))


def _check_columns(path: Path, columns: list[str]) -> None:
    expected = [*FEATURE_NAMES, SPECIES_COLUMN]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    missing = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    problems = []
    if duplicated:
        problems.append(f"duplicated columns {duplicated}")
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    if problems:
        raise DataError(
            f"{path}: {'; '.join(problems)}; expected exactly {expected} "
            "(or name yours with --columns NAME=COLUMN,...)"
        )


def _lines(mask: pd.Series) -> str:
    """File line numbers of the rows in `mask` (the frame is indexed by line number)."""
    lines = [str(line) for line in mask.index[mask.to_numpy()]]
    shown = ", ".join(lines[:MAX_LINES_SHOWN])
    more = f" and {len(lines) - MAX_LINES_SHOWN} more" if len(lines) > MAX_LINES_SHOWN else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


def _numeric_column(path: Path, raw: pd.DataFrame, name: str) -> pd.Series:
    text = raw[name].str.strip()
    blank = text == ""
    if blank.any():
        raise DataError(f"{path}: column {name!r} has missing values on {_lines(blank)}")
    values = pd.to_numeric(text, errors="coerce")
    not_numbers = values.isna() & ~text.str.lower().isin(["nan", "-nan", "+nan"])
    if not_numbers.any():
        example = text[not_numbers].iloc[0]
        raise DataError(
            f"{path}: column {name!r} has non-numeric values on {_lines(not_numbers)} "
            f"(for example {example!r})"
        )
    not_finite = ~np.isfinite(values)
    if not_finite.any():
        raise DataError(
            f"{path}: column {name!r} has NaN or infinite values on {_lines(not_finite)}"
        )
    out_of_range = breaks_size_rule(values)
    if out_of_range.any():
        example = text[out_of_range].iloc[0]
        raise DataError(
            f"{path}: column {name!r} breaks the size rule ({SIZE_RULE}); "
            f"{_lines(out_of_range)} are not (for example {example})"
        )
    return values.astype(float)


def _species_column(path: Path, raw: pd.DataFrame) -> pd.Series:
    # The UCI file spells species "Iris-setosa"; scikit-learn spells them "setosa".
    species = raw[SPECIES_COLUMN].str.strip().str.lower().str.removeprefix("iris-")
    blank = species == ""
    if blank.any():
        raise DataError(f"{path}: column 'species' has missing values on {_lines(blank)}")
    unknown = ~species.isin(CLASS_NAMES)
    if unknown.any():
        names = sorted(raw.loc[unknown, SPECIES_COLUMN].unique())
        raise DataError(
            f"{path}: unknown species {names} on {_lines(unknown)}; known species are "
            f"{list(CLASS_NAMES)}"
        )
    return species.rename(SPECIES_COLUMN)


def _check_classes(path: Path, species: pd.Series, min_rows_per_class: int) -> None:
    counts = species.value_counts()
    if len(counts) < 2:
        raise DataError(
            f"{path}: only one species ({counts.index[0]!r}) is present; a classifier needs at "
            "least two"
        )
    too_few = {name: int(n) for name, n in counts.items() if n < min_rows_per_class}
    if too_few:
        raise DataError(
            f"{path}: each species needs at least {min_rows_per_class} rows for the hold-out "
            f"split and cross-validation; these have fewer: {too_few}"
        )


def _frame_sha256(frame: pd.DataFrame) -> str:
    """A digest of the data as used (canonical CSV), so reordered columns hash the same."""
    canonical = frame[[*FEATURE_NAMES, SPECIES_COLUMN]].to_csv(index=False, float_format="%.6g")
    return hashlib.sha256(canonical.encode()).hexdigest()
