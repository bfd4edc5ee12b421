"""Training data checks: every unusable CSV is refused with a message naming the problem."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from iris_classifier.flowers import CLASS_NAMES
from iris_classifier.training.data import DataError, load_bundled, load_csv
from iris_classifier.training.layouts import parse_column_mapping

HEADER = "sepal_length,sepal_width,petal_length,petal_width,species"
GOOD_ROWS = [
    *(f"5.{i},3.{i},1.{i},0.{i + 1},setosa" for i in range(8)),
    *(f"6.{i},2.{i},4.{i},1.{i},versicolor" for i in range(8)),
    *(f"7.{i},3.{i},6.{i},2.{i},virginica" for i in range(8)),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flowers.csv"
    path.write_text(text)
    return path


def csv_text(rows: list[str], header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def load(path: Path):
    return load_csv(path, min_rows_per_class=8)


def test_bundled_data_has_150_flowers_of_three_species() -> None:
    data = load_bundled()
    assert len(data.features) == 150
    assert list(data.features.columns) == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert data.class_names == list(CLASS_NAMES)
    assert data.sha256 == bundled_digest()


def canonical_csv(rows: list[tuple[float, ...]], species: list[str]) -> str:
    """The data as its digest reads it: the contract's columns, values as `%.6g`."""
    lines = [HEADER]
    for row, name in zip(rows, species, strict=True):
        lines.append(",".join([*(f"{value:.6g}" for value in row), name]))
    return "\n".join(lines) + "\n"


def bundled_digest() -> str:
    """SHA-256 of the bundled set written out as a canonical CSV, computed here on its own."""
    from sklearn.datasets import load_iris

    bunch = load_iris()
    species = [str(bunch.target_names[target]) for target in bunch.target]
    return hashlib.sha256(canonical_csv(bunch.data.tolist(), species).encode()).hexdigest()


def test_a_canonical_files_digest_is_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    cells = [row.split(",") for row in GOOD_ROWS]
    text = canonical_csv([tuple(map(float, c[:4])) for c in cells], [c[4] for c in cells])
    path = write(tmp_path, text)
    assert load(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_valid_csv_loads_as_float_features_and_its_species(tmp_path: Path) -> None:
    data = load(write(tmp_path, csv_text(GOOD_ROWS)))
    assert len(data.features) == 24
    assert data.features.dtypes.map(str).tolist() == ["float64"] * 4
    assert data.class_names == list(CLASS_NAMES)


def test_uci_species_spelling_and_column_order_are_accepted(tmp_path: Path) -> None:
    rows = [",".join([r.split(",")[4], *r.split(",")[:4]]) for r in GOOD_ROWS]
    rows = [f"Iris-{row}" for row in rows]
    header = "species,sepal_length,sepal_width,petal_length,petal_width"
    reordered = load(write(tmp_path, csv_text(rows, header)))
    original = load(write(tmp_path, csv_text(GOOD_ROWS)))
    assert reordered.sha256 == original.sha256


def test_same_data_hashes_the_same_and_changed_data_differently(tmp_path: Path) -> None:
    first = load(write(tmp_path, csv_text(GOOD_ROWS))).sha256
    again = load(write(tmp_path, csv_text(GOOD_ROWS))).sha256
    changed = load(write(tmp_path, csv_text([*GOOD_ROWS[:-1], "7.9,3.9,6.9,2.4,virginica"]))).sha256
    assert first == again != changed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (HEADER + "\n", "no data rows"),
        (
            csv_text([r.rsplit(",", 1)[0] for r in GOOD_ROWS], HEADER.rsplit(",", 1)[0]),
            "missing columns ['species']",
        ),
        (
            csv_text([r + ",x" for r in GOOD_ROWS], HEADER + ",colour"),
            "unexpected columns ['colour']",
        ),
        (csv_text(GOOD_ROWS, HEADER.replace("sepal_width", "sepal_length")), "duplicated columns"),
        (
            csv_text([*GOOD_ROWS, "5.0,abc,1.4,0.2,setosa"]),
            "'sepal_width' has non-numeric values on line 26",
        ),
        (
            csv_text([*GOOD_ROWS, "5.0,,1.4,0.2,setosa"]),
            "'sepal_width' has missing values on line 26",
        ),
        (
            csv_text([*GOOD_ROWS, "5.0,3.1,nan,0.2,setosa"]),
            "'petal_length' has NaN or infinite values",
        ),
        (
            csv_text([*GOOD_ROWS, "5.0,3.1,1.4,inf,setosa"]),
            "'petal_width' has NaN or infinite values",
        ),
        (csv_text([*GOOD_ROWS, "-5.0,3.1,1.4,0.2,setosa"]), "'sepal_length' breaks the size rule"),
        (csv_text([*GOOD_ROWS, "500,3.1,1.4,0.2,setosa"]), "'sepal_length' breaks the size rule"),
        (csv_text([*GOOD_ROWS, "5.0,3.1,1.4,0.2,daisy"]), "unknown species ['daisy'] on line 26"),
        (csv_text([*GOOD_ROWS, "5.0,3.1,1.4,0.2,"]), "'species' has missing values"),
        (csv_text(GOOD_ROWS[:8]), "only one species ('setosa')"),
        (csv_text(GOOD_ROWS[:8] + GOOD_ROWS[8:10]), "{'versicolor': 2}"),
        (csv_text([*GOOD_ROWS, "5.0,3.1,1.4,0.2,setosa,7"]), "not a readable CSV"),
    ],
    ids=[
        "empty-file",
        "header-only",
        "missing-column",
        "extra-column",
        "duplicated-column",
        "non-numeric",
        "blank-value",
        "nan",
        "infinity",
        "negative",
        "absurd-size",
        "unknown-species",
        "blank-species",
        "single-class",
        "too-few-rows-in-a-class",
        "row-with-extra-field",
    ],
)
def test_bad_csv_is_refused_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError) as refused:
        load(write(tmp_path, text))
    assert message in str(refused.value)


def test_many_bad_lines_are_counted_not_all_listed(tmp_path: Path) -> None:
    rows = [*GOOD_ROWS, *(["5.0,x,1.4,0.2,setosa"] * 12)]
    with pytest.raises(DataError, match=r"lines 26, 27, 28, 29, 30 and 7 more"):
        load(write(tmp_path, csv_text(rows)))


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "absent.csv")


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flowers.csv"
    path.write_bytes(csv_text(GOOD_ROWS).encode() + b"\xff\xfe,1,2,3,setosa\n")
    with pytest.raises(DataError):
        load(path)


def uci_text(rows: list[str]) -> str:
    """UCI's iris.data: no header, `Iris-` labels, and the blank lines the real file ends with."""
    return (
        "\n".join(",".join([*r.split(",")[:4], "Iris-" + r.split(",")[4]]) for r in rows) + "\n\n"
    )


def kaggle_text(rows: list[str]) -> str:
    header = "Id,SepalLengthCm,SepalWidthCm,PetalLengthCm,PetalWidthCm,Species"
    lines = [f"{i},{r.rsplit(',', 1)[0]},Iris-{r.rsplit(',', 1)[1]}" for i, r in enumerate(rows, 1)]
    return "\n".join([header, *lines]) + "\n"


def test_uci_iris_data_is_recognised(tmp_path: Path) -> None:
    data = load(write(tmp_path, uci_text(GOOD_ROWS)))
    original = load(write(tmp_path, csv_text(GOOD_ROWS)))
    assert data.sha256 == original.sha256
    assert "UCI iris.data layout" in data.source


def test_uci_iris_data_reports_file_line_numbers(tmp_path: Path) -> None:
    # No header: the bad flower is on line 25 of the file, not 26.
    text = uci_text([*GOOD_ROWS, "5.0,abc,1.4,0.2,setosa"])
    with pytest.raises(DataError, match="non-numeric values on line 25 "):
        load(write(tmp_path, text))


def test_kaggle_iris_csv_is_recognised(tmp_path: Path) -> None:
    data = load(write(tmp_path, kaggle_text(GOOD_ROWS)))
    assert data.sha256 == load(write(tmp_path, csv_text(GOOD_ROWS))).sha256
    assert list(data.features.columns) == list(HEADER.split(",")[:4])
    assert "Kaggle Iris.csv layout" in data.source


def test_column_mapping_reads_another_layout(tmp_path: Path) -> None:
    header = "Kind,SL,SW,PL,PW,Notes"
    rows = [f"{r.rsplit(',', 1)[1]},{r.rsplit(',', 1)[0]},ok" for r in GOOD_ROWS]
    mapping = parse_column_mapping(
        "sepal_length=SL, sepal_width=SW, petal_length=PL, petal_width=PW, species=Kind"
    )
    data = load_csv(write(tmp_path, csv_text(rows, header)), min_rows_per_class=8, columns=mapping)
    assert data.sha256 == load(write(tmp_path, csv_text(GOOD_ROWS))).sha256


def test_unknown_layout_is_still_refused_with_a_hint(tmp_path: Path) -> None:
    header = "Kind,SL,SW,PL,PW"
    rows = [f"{r.rsplit(',', 1)[1]},{r.rsplit(',', 1)[0]}" for r in GOOD_ROWS]
    with pytest.raises(DataError, match=r"missing columns .*--columns"):
        load(write(tmp_path, csv_text(rows, header)))


def test_column_mapping_naming_an_absent_column_is_refused(tmp_path: Path) -> None:
    mapping = parse_column_mapping(
        "sepal_length=SL,sepal_width=SW,petal_length=PL,petal_width=PW,species=Kind"
    )
    with pytest.raises(DataError, match=r"does not have: \['Kind', 'PL', 'PW', 'SL', 'SW'\]"):
        load_csv(write(tmp_path, csv_text(GOOD_ROWS)), min_rows_per_class=8, columns=mapping)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sepal_length=a,sepal_width=b,petal_length=c,petal_width=d", "no column given for"),
        ("sepal_length=a,sepal_length=b", "mapped twice"),
        ("stem=a", "'stem' is not one of"),
        ("sepal_length", "is not NAME=COLUMN"),
    ],
)
def test_bad_column_mapping_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_column_mapping(text)
