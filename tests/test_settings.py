"""Settings: read once from the environment or a TOML file, secrets kept secret.

Precedence: explicit overrides, then ``TOUCHPOINT_*`` environment variables, then the
TOML file (``--config`` or ``TOUCHPOINT_CONFIG``), then the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.runtime.app import create_worker, ingest_rules
from streams.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the defaults, whatever the shell running the tests exports."""
    for name in list(os.environ):
        if name.upper().startswith("TOUCHPOINT_"):
            monkeypatch.delenv(name)


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "touchpoint.toml"
    path.write_text(text)
    return path


SASL = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "svc",
}


# --- sources and precedence ------------------------------------------------------------


def test_environment_variables_with_the_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("TOUCHPOINT_CLICKHOUSE_URL", "https://ch.internal:8443")
    monkeypatch.setenv("TOUCHPOINT_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("TOUCHPOINT_CLICKHOUSE_VERIFY_TLS", "false")
    monkeypatch.setenv("TOUCHPOINT_MAX_FUTURE_S", "60.5")
    monkeypatch.setenv("TOUCHPOINT_TIME_POLICY", "dead_letter")
    monkeypatch.setenv("TOUCHPOINT_BLOCKED_VALUES", '["guest", "demo"]')
    monkeypatch.setenv("TOUCHPOINT_DEFAULT_PHONE_REGION", "GB")
    settings = load_settings()
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert settings.clickhouse_url == "https://ch.internal:8443"
    assert settings.topic_partitions == 12
    assert settings.clickhouse_verify_tls is False
    assert settings.max_future_s == 60.5
    assert settings.time_policy == "dead_letter"
    assert settings.blocked_values == ("guest", "demo")
    assert settings.default_phone_region == "GB"


def test_environment_variable_names_are_not_case_sensitive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("touchpoint_app_id", "lower-case-app")
    assert load_settings().app_id == "lower-case-app"


def test_without_anything_configured_the_defaults_apply() -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap == "localhost:9092"
    assert settings.clickhouse_database == "touchpoints"
    assert (settings.dlq_topic, settings.alerts_topic) == ("touchpoints.dlq", "touchpoints.alerts")
    assert (settings.max_event_bytes, settings.max_string_chars) == (65536, 4096)


def test_a_toml_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = toml(
        tmp_path,
        'kafka_bootstrap = "from-file:9092"\ntopic_partitions = 12\n'
        'blocked_values = ["guest"]\ntime_policy = "dead_letter"\n',
    )
    monkeypatch.setenv("TOUCHPOINT_TOPIC_PARTITIONS", "6")
    settings = load_settings(config)
    assert settings.kafka_bootstrap == "from-file:9092"
    assert settings.topic_partitions == 6
    assert settings.blocked_values == ("guest",)
    assert settings.time_policy == "dead_letter"


def test_the_config_file_may_be_named_by_touchpoint_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOUCHPOINT_CONFIG", str(toml(tmp_path, 'app_id = "from-file"\n')))
    assert load_settings().app_id == "from-file"


def test_overrides_win_over_the_environment_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = toml(tmp_path, 'app_id = "from-file"\n')
    monkeypatch.setenv("TOUCHPOINT_APP_ID", "from-env")
    assert load_settings(config, app_id="from-call").app_id == "from-call"


def test_the_config_file_applies_only_to_the_settings_it_loads(tmp_path: Path) -> None:
    assert load_settings(toml(tmp_path, 'app_id = "from-file"\n')).app_id == "from-file"
    assert Settings().app_id == "touchpoint-streams"


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.toml"):
        load_settings(tmp_path / "nowhere.toml")


def test_an_unknown_key_in_the_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="kafka_bootstrapp"):
        load_settings(toml(tmp_path, 'kafka_bootstrapp = "typo:9092"\n'))


# --- Kafka security ------------------------------------------------------------------------


def test_sasl_ssl_without_a_password_is_refused_with_what_to_set() -> None:
    with pytest.raises(ValidationError, match="TOUCHPOINT_KAFKA_SASL_PASSWORD"):
        Settings(**SASL)


def test_sasl_without_a_mechanism_or_username_is_refused_with_what_to_set() -> None:
    with pytest.raises(ValidationError, match="TOUCHPOINT_KAFKA_SASL_MECHANISM"):
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_password="pw")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="TOUCHPOINT_KAFKA_SASL_USERNAME"):
        Settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_password="pw",  # type: ignore[arg-type]
        )


def test_sasl_from_the_environment_without_a_password_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOUCHPOINT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TOUCHPOINT_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("TOUCHPOINT_KAFKA_SASL_USERNAME", "svc")
    with pytest.raises(ValidationError, match="TOUCHPOINT_KAFKA_SASL_PASSWORD"):
        load_settings()


def test_an_empty_sasl_password_is_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # what an unset secret usually looks like once a deployment has rendered it
    monkeypatch.setenv("TOUCHPOINT_KAFKA_SASL_PASSWORD", "")
    with pytest.raises(ValidationError, match="TOUCHPOINT_KAFKA_SASL_PASSWORD"):
        load_settings(**SASL)


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


def test_sasl_ssl_options_carry_a_verifying_tls_context() -> None:
    settings = Settings(**SASL, kafka_sasl_password="s3cret")  # type: ignore[arg-type]
    options = settings.kafka_client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_password"] == "s3cret"
    assert options["ssl_context"].check_hostname is True


def test_plaintext_needs_no_security_options() -> None:
    assert Settings().kafka_client_options() == {"security_protocol": "PLAINTEXT"}


# --- secrets ---------------------------------------------------------------------------------

SECRETS = {
    "kafka_sasl_password": "sasl-hunter2",
    "kafka_ssl_key_password": "key-hunter2",
    "clickhouse_password": "ch-hunter2",
}


def test_secrets_never_show_in_repr_str_or_the_printed_configuration() -> None:
    settings = Settings(**SASL, **SECRETS)  # type: ignore[arg-type]
    shown = [repr(settings), str(settings), str(settings.redacted()), settings.model_dump_json()]
    for text in shown:
        for secret in SECRETS.values():
            assert secret not in text


def test_the_printed_configuration_masks_secrets_but_shows_everything_else() -> None:
    redacted = Settings(**SASL, **SECRETS).redacted()  # type: ignore[arg-type]
    assert set(redacted) == set(Settings.model_fields)
    assert redacted["kafka_sasl_username"] == "svc"
    for name, secret in SECRETS.items():
        assert redacted[name] not in (None, "", secret)


def test_a_secret_from_the_environment_is_read_and_still_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOUCHPOINT_CLICKHOUSE_PASSWORD", "env-hunter2")
    settings = load_settings()
    assert settings.clickhouse_password.get_secret_value() == "env-hunter2"
    assert "env-hunter2" not in repr(settings)
    assert "env-hunter2" not in str(settings.redacted())


# --- input topics ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "read"),
    [
        ("touchpoints.web", True),
        ("touchpoints.call_center", True),
        ("touchpoints.mobile_app", True),
        ("touchpoints.all", True),
        ("touchpoints.kiosk2", True),
        ("touchpoints.dlq", False),
        ("touchpoints.alerts", False),
        ("touchpoints.Web", False),
        ("other.web", False),
        ("touchpoints.", False),
        ("touchpoints.web.extra", False),
        ("touchpoints.call-center", False),
        ("xtouchpoints.web", False),
        ("touchpoints_web", False),
    ],
)
def test_the_input_pattern_reads_channel_topics_and_never_the_outputs(
    topic: str, read: bool
) -> None:
    assert bool(Settings().input_pattern.fullmatch(topic)) is read


def test_the_outputs_stay_excluded_under_a_wider_custom_pattern() -> None:
    settings = Settings(topic_pattern=r"touchpoints\..*|legacy-.*", dlq_topic="legacy-dlq")
    assert settings.input_pattern.fullmatch("touchpoints.web")
    assert settings.input_pattern.fullmatch("legacy-orders")
    assert not settings.input_pattern.fullmatch("legacy-dlq")
    assert not settings.input_pattern.fullmatch("touchpoints.alerts")
    assert settings.input_pattern.fullmatch("touchpoints.dlq")  # no longer our dead letters


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"topic_pattern": "(unclosed"},
        {"blocked_patterns": ["[unclosed"]},
        {"clickhouse_database": "drop table;"},
        {"clickhouse_database": "touchpoints\n"},
        {"app_id": "my app"},
        {"app_id": "touchpoint-streams\n"},
        {"topic_partitions": 0},
        {"max_event_bytes": 10},
        {"time_policy": "ignore"},
        {"kafka_security_protocol": "SASL"},
        {"web_port": 70000},
        {"no_such_setting": 1},
    ],
    ids=lambda bad: repr(bad)[1:-1],
)
def test_bad_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)  # type: ignore[arg-type]


def test_every_blocked_pattern_settings_accept_builds_ingest_rules() -> None:
    settings = Settings(blocked_patterns=(r"(?i)guest-\d+", r"[0\-]+"))
    rules = ingest_rules(settings)
    assert rules.identifiers.is_blocked("GUEST-7")


def test_ingest_rules_carry_the_configured_limits() -> None:
    settings = Settings(
        max_event_bytes=2048,
        max_string_chars=100,
        clock_skew_tolerance_s=5,
        max_future_s=60,
        max_age_s=3600,
        time_policy="dead_letter",
        blocked_values=("Guest",),
        blocked_patterns=(r"test-\d+",),
        default_phone_region="GB",
    )
    rules = ingest_rules(settings)
    assert (rules.max_event_bytes, rules.max_string_chars) == (2048, 100)
    assert (rules.clock_skew_tolerance_s, rules.max_future_s, rules.max_age_s) == (5, 60, 3600)
    assert rules.time_policy == "dead_letter"
    assert rules.identifiers.blocked_values == frozenset({"guest"})
    assert rules.identifiers.blocked_patterns == (r"test-\d+",)
    assert rules.identifiers.default_phone_region == "GB"


@pytest.mark.parametrize(("seconds", "expected_ms"), [(None, 15_000), (4.5, 4_500)])
def test_the_consumer_refreshes_topic_metadata_often(
    tmp_path: Path, seconds: float | None, expected_ms: int
) -> None:
    """A group joined while a restarting broker reported every topic missing holds no
    partitions until the consumer's metadata changes (a fault run idled five minutes,
    Kafka's default refresh): the worker asks for it every 15 s unless told otherwise."""
    extra = {} if seconds is None else {"kafka_metadata_max_age_s": seconds}
    settings = Settings(data_dir=tmp_path, store="memory://", **extra)
    worker = create_worker(settings, ("touchpoints.web",))
    assert worker.app.conf.consumer_metadata_max_age_ms == expected_ms
