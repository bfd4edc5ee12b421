"""Which stored model a replica serves: the Bento's packed version, else IRIS_MODEL, else the
store's latest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from iris_classifier.serving import config


@pytest.fixture
def outside_a_bento(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("IRIS_MODEL", raising=False)
    monkeypatch.setenv("BENTO_PATH", str(tmp_path / "no-bento"))
    return tmp_path


def pack(bento: Path, *tags: str) -> None:
    """A bento.yaml as `bentoml build` writes it for a `@bentoml.service` class: the models
    under the service's entry, none at the top."""
    bento.mkdir(exist_ok=True)
    models = [{"tag": tag, "module": "", "creation_time": "2026-01-01"} for tag in tags]
    manifest = {"models": [], "services": [{"name": "IrisClassifier", "models": models}]}
    (bento / "bento.yaml").write_text(yaml.safe_dump(manifest))


def test_the_store_latest_is_served_unless_a_version_is_named(
    outside_a_bento: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert config.served_model_tag() == "iris_classifier:latest"
    monkeypatch.setenv("IRIS_MODEL", "abc123")
    assert config.served_model_tag() == "iris_classifier:abc123"
    monkeypatch.setenv("IRIS_MODEL", "iris_classifier:def456")
    assert config.Settings.from_env().model_tag == "iris_classifier:def456"


def test_a_bento_serves_the_version_it_was_built_with(
    outside_a_bento: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bento = outside_a_bento / "bento"
    pack(bento, "iris_classifier:packed1")
    monkeypatch.setenv("BENTO_PATH", str(bento))
    assert config.served_model_tag() == "iris_classifier:packed1"
    monkeypatch.setenv("IRIS_MODEL", "packed1")
    assert config.served_model_tag() == "iris_classifier:packed1"
    monkeypatch.setenv("IRIS_MODEL", "other2")
    with pytest.raises(ValueError, match="holds iris_classifier:packed1 only"):
        config.served_model_tag()


@pytest.mark.parametrize("tags", [(), ("iris_classifier:a", "iris_classifier:b")])
def test_a_bento_without_exactly_one_model_is_refused(
    outside_a_bento: Path, monkeypatch: pytest.MonkeyPatch, tags: tuple[str, ...]
) -> None:
    bento = outside_a_bento / "bento"
    pack(bento, *tags)
    monkeypatch.setenv("BENTO_PATH", str(bento))
    with pytest.raises(ValueError, match="packs"):
        config.served_model_tag()


def test_the_prediction_log_is_off_unless_a_rate_is_set(
    outside_a_bento: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IRIS_PREDICTION_LOG_RATE", raising=False)
    assert config.Settings.from_env().prediction_log_rate == 0
    monkeypatch.setenv("IRIS_PREDICTION_LOG_RATE", "0.01")
    monkeypatch.setenv("IRIS_PREDICTION_LOG_MAX_ROWS", "5")
    settings = config.Settings.from_env()
    assert (settings.prediction_log_rate, settings.prediction_log_max_rows) == (0.01, 5)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IRIS_PREDICTION_LOG_RATE", "1.5"),
        ("IRIS_PREDICTION_LOG_RATE", "-0.1"),
        ("IRIS_PREDICTION_LOG_RATE", "nan"),
        ("IRIS_PREDICTION_LOG_RATE", "1%"),
        ("IRIS_PREDICTION_LOG_MAX_ROWS", "0"),
        ("IRIS_PREDICTION_LOG_MAX_ROWS", "2.5"),
        ("IRIS_LOG_FLUSH_SECONDS", "0"),
    ],
)
def test_a_prediction_log_setting_out_of_range_is_refused_by_name(
    outside_a_bento: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=rf"^{variable}='{re.escape(value)}': expected a"):
        config.Settings.from_env()


def test_slow_client_bounds_have_their_stated_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in SLOW_CLIENT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    settings = config.Settings.from_env()
    assert (
        settings.max_connections,
        settings.head_timeout_seconds,
        settings.body_min_bytes_per_second,
    ) == (500, 5.0, 1024)
    monkeypatch.setenv("IRIS_MAX_CONNECTIONS", "0")
    monkeypatch.setenv("IRIS_HEAD_TIMEOUT_SECONDS", "2.5")
    settings = config.Settings.from_env()
    assert (settings.max_connections, settings.head_timeout_seconds) == (0, 2.5)


SLOW_CLIENT_VARIABLES = (
    "IRIS_MAX_CONNECTIONS",
    "IRIS_HEAD_TIMEOUT_SECONDS",
    "IRIS_BODY_MIN_BYTES_PER_SECOND",
)


@pytest.mark.parametrize("variable", SLOW_CLIENT_VARIABLES)
@pytest.mark.parametrize("value", ["-1", "ten", "nan", "inf", "1e999"])
def test_a_bad_slow_client_bound_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=rf"^{variable}='{value}': expected .*0 or more"):
        config.Settings.from_env()


def test_a_connection_bound_must_be_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRIS_MAX_CONNECTIONS", "2.5")
    with pytest.raises(ValueError, match="expected a whole number"):
        config.Settings.from_env()
