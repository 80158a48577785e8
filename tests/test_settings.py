"""Settings: read once from the environment or a TOML file, secrets kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings, load_settings


def test_environment_variables_with_the_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("TOUCHPOINT_CLICKHOUSE_URL", "https://ch.internal:8443")
    monkeypatch.setenv("TOUCHPOINT_BLOCKED_VALUES", '["guest"]')
    settings = load_settings()
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert settings.clickhouse_url == "https://ch.internal:8443"
    assert settings.blocked_values == ("guest",)


def test_a_toml_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "touchpoint.toml"
    config.write_text('kafka_bootstrap = "from-file:9092"\ntopic_partitions = 12\n')
    monkeypatch.setenv("TOUCHPOINT_TOPIC_PARTITIONS", "6")
    settings = load_settings(config)
    assert (settings.kafka_bootstrap, settings.topic_partitions) == ("from-file:9092", 6)


def test_a_missing_config_file_is_an_error() -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.toml"):
        load_settings(Path("nowhere.toml"))


def test_sasl_without_a_password_is_refused_with_what_to_set() -> None:
    with pytest.raises(ValidationError, match="TOUCHPOINT_KAFKA_SASL_PASSWORD"):
        Settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="svc",
        )


def test_scram_options_reach_the_kafka_clients() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="s3cret",  # type: ignore[arg-type]
    )
    assert settings.kafka_client_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
    }


def test_secrets_never_show_in_repr_or_the_printed_configuration() -> None:
    settings = Settings(clickhouse_password="hunter2")  # type: ignore[arg-type]
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.redacted())


@pytest.mark.parametrize(
    ("topic", "read"),
    [
        ("touchpoints.web", True),
        ("touchpoints.call_center", True),
        ("touchpoints.dlq", False),
        ("touchpoints.alerts", False),
        ("touchpoints.Web", False),
        ("other.web", False),
        ("touchpoints.web.extra", False),
    ],
)
def test_the_input_pattern_never_reads_the_outputs(topic: str, read: bool) -> None:
    assert bool(Settings().input_pattern.fullmatch(topic)) is read


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(topic_pattern="(unclosed")
    with pytest.raises(ValidationError):
        Settings(clickhouse_database="drop table;")
