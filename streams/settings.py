"""Configuration, typed and read once.

Every setting comes from an environment variable ``TOUCHPOINT_<NAME>`` (for example
``TOUCHPOINT_KAFKA_BOOTSTRAP``), from a TOML file named by ``TOUCHPOINT_CONFIG`` or
``--config`` (keys are the lower-case names without the prefix), or from the default
below, in that order of precedence. Secrets are ``SecretStr``: they never appear in
``repr``, logs or ``touchpoint config``.

Mistakes are refused, never guessed around: a ``TOUCHPOINT_*`` variable that names no
setting (a typo would otherwise be ignored), malformed JSON in a JSON-valued variable,
a malformed TOML file and invalid values each raise an error whose one-line message
(:func:`describe_error`) names the setting and what to do.
"""

from __future__ import annotations

import difflib
import json
import re
import ssl
import tomllib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as _SourceError

from schemas.alert_rules import AlertRules
from streams.domain.effort import DEFAULT_ASSISTED_CHANNELS
from streams.domain.identity import DEFAULT_LIMITS, DEFAULT_PRIORITY, DEFAULT_UNIQUE_KINDS
from streams.domain.journey import DEFAULT_CASE_CLOSING_TYPES, DEFAULT_STAGES

__all__ = [
    "DEFAULT_BLOCKED_PATTERNS",
    "DEFAULT_BLOCKED_VALUES",
    "ENV_PREFIX",
    "OTHER_VARIABLES",
    "ConfigurationError",
    "Settings",
    "describe_error",
    "env_name",
    "load_settings",
    "unknown_variables",
]

#: Every setting's environment variable starts with this.
ENV_PREFIX = "TOUCHPOINT_"
#: Variables with the prefix that are read by name rather than as settings: the config
#: file's path, the cache of downloaded jars (tests, demo, benchmark), the browser the
#: report's tests drive and the seed of the fault suite's test.
OTHER_VARIABLES: frozenset[str] = frozenset(
    {
        "TOUCHPOINT_CONFIG",
        "TOUCHPOINT_CACHE_DIR",
        "TOUCHPOINT_TEST_CHROMIUM",
        "TOUCHPOINT_FAULT_SEED",
    }
)
#: A family of variables: each webhook endpoint's secret, ``TOUCHPOINT_WEBHOOK_SECRET_<NAME>``.
_WEBHOOK_SECRET_PREFIX = "TOUCHPOINT_WEBHOOK_SECRET_"  # noqa: S105  (a name, not a secret)


class ConfigurationError(ValueError):
    """The settings cannot be read as given; the message is one line naming the setting
    (or file) and what to do."""


#: Placeholder values that mean "no identifier"; compared after trimming, case-insensitively.
DEFAULT_BLOCKED_VALUES: tuple[str, ...] = (
    "",
    "null",
    "undefined",
    "none",
    "nil",
    "nan",
    "0",
    "-1",
    "anonymous",
    "unknown",
    "n/a",
    "na",
    "[object object]",
    "test@test.com",
)
#: Regular expressions for placeholder values, matched against the whole trimmed value.
DEFAULT_BLOCKED_PATTERNS: tuple[str, ...] = (
    r"[0\-]+",  # all-zero ids: 0000, 00000000-0000-0000-0000-000000000000
    r"[xX*]+",  # masked values: xxxx, ****
)

_CONFIG_FILE: Path | None = None


class Settings(BaseSettings):
    """All settings of the worker, the demo, the generator and the benchmark."""

    model_config = SettingsConfigDict(
        env_prefix="TOUCHPOINT_",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "localhost:9092", description="comma-separated host:port list of Kafka brokers"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how every Kafka client connects: TLS, SASL, both or neither"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with a SASL_* security protocol)"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (secret: from the environment or a secret store)"
    )
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(
        None, description="private key of the client certificate"
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="password of that private key (secret)"
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="check that the broker's certificate names the host connected to"
    )
    topic_pattern: str = Field(
        r"^touchpoints\.[a-z0-9_]+$",
        description="input topics; output topics (dlq, alerts, identity merges) never match",
    )
    dlq_topic: str = Field("touchpoints.dlq", description="dead letters (output)")
    alerts_topic: str = Field("touchpoints.alerts", description="alerts fired (output)")
    merges_topic: str = Field(
        "touchpoints.identity_merges", description="identity merge decisions (output)"
    )
    topic_partitions: int = Field(
        8,
        ge=1,
        description=(
            "partitions of every touchpoints.* topic and of the state changelogs; all input "
            "topics must have this many (state is co-partitioned with its input)"
        ),
    )
    topic_replication: int = Field(1, ge=1, description="replication of topics the worker creates")
    customer_partitions: int | None = Field(
        None,
        ge=1,
        description=(
            "partitions of the customers topic, where journeys, cases, effort and scores are "
            "kept per customer: how many workers share that work (default: topic_partitions). "
            "Fixed once state exists: the workers refuse a customers topic with another count"
        ),
    )

    # --- ClickHouse --------------------------------------------------------------------
    clickhouse_url: str = Field(
        "http://localhost:8123",
        description="ClickHouse HTTP interface with its scheme: http://host:8123, or https://",
    )
    clickhouse_database: str = Field(
        "touchpoints", description="database of the tables and views (created if missing)"
    )
    clickhouse_user: str = Field("default", description="ClickHouse user")
    clickhouse_password: SecretStr = Field(
        SecretStr(""), description="ClickHouse password (secret)"
    )
    clickhouse_verify_tls: bool = Field(
        True, description="verify the server's certificate with an https:// URL"
    )
    clickhouse_cluster: str | None = Field(
        None,
        description=(
            "a ClickHouse cluster (remote_servers) to create the schema on: replicated "
            "tables ON CLUSTER, read and written through Distributed tables; unset for one "
            "server"
        ),
    )

    # --- Worker ------------------------------------------------------------------------
    app_id: str = Field("touchpoint-streams", description="Kafka consumer group and state prefix")
    data_dir: Path = Field(Path("var/worker"), description="local state (RocksDB) directory")
    store: str = Field("rocksdb://", description="table store: rocksdb:// or memory://")
    state_block_cache_mib: int = Field(
        8,
        ge=1,
        le=4096,
        description="RocksDB block cache of each state partition's database (reads beyond "
        "it come from the operating system's page cache, which is not the worker's memory)",
    )
    state_write_buffer_mib: int = Field(
        8,
        ge=1,
        le=1024,
        description="RocksDB write buffer of each state partition's database (two at most)",
    )
    web_host: str = Field("127.0.0.1", description="address the metrics and health pages bind")
    web_port: int = Field(6066, ge=0, le=65535, description="metrics and health endpoint")
    live_max_loop_lag_s: float = Field(
        10.0, gt=0, description="/live fails while the event loop's heartbeat is this late"
    )
    ready_clickhouse_max_age_s: float = Field(
        30.0,
        gt=0,
        description="/ready needs a successful ClickHouse insert or ping this recent (seconds)",
    )
    ready_sink_max_age_s: float = Field(
        120.0,
        gt=0,
        description="/ready fails while a row has waited this long for ClickHouse (stuck sink)",
    )
    consumer_lag_interval_s: float = Field(
        15.0, gt=0, description="how often the consumer lag is sampled from the broker"
    )
    topic_discovery_interval_s: float = Field(
        30.0, gt=0, description="how often to look for new input topics (new channels)"
    )
    max_poll_records: int = Field(2000, ge=1, description="records fetched per partition poll")
    commit_interval_s: float = Field(
        2.0, gt=0, description="how often processed offsets are committed (seconds)"
    )
    kafka_session_timeout_s: float = Field(
        30.0,
        ge=6,
        description="a worker that stops heart-beating this long loses its partitions",
    )
    kafka_metadata_max_age_s: float = Field(
        15.0,
        ge=1,
        description="how often a worker refreshes the cluster's topic metadata (seconds): "
        "a worker that joined its group while topics were missing (a broker still starting) "
        "takes its partitions at the next refresh",
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new consumer group starts on a partition"
    )
    startup_timeout_s: float = Field(
        300.0,
        ge=0,
        description="how long a starting worker waits for Kafka and ClickHouse (0: no limit)",
    )
    shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a stop (SIGTERM) that takes longer ends the process at once, status 1; "
        "the local state is then rebuilt from the changelogs at the next start",
    )
    table_standby_replicas: int = Field(
        0,
        ge=0,
        description="workers that keep a warm copy of each state partition they do not own "
        "(Faust standby replicas). 0, the default, restores a partition that moves from its "
        "changelog: with standbys, fault runs of 20 restarts lost identity and journey "
        "updates in 2 of 6 runs, none in 3 without",
    )
    reconcile_interval_s: float = Field(
        60.0,
        ge=0,
        description="how often a worker checks the ledger for committed offsets nothing read "
        "(touchpoint_unaccounted_offsets); 0 turns the check off",
    )
    revoke_wait_s: float = Field(
        10.0,
        gt=0,
        description="how long a rebalance or a stop waits for batches in processing before "
        "it leaves them uncommitted (whoever holds the partition next reads them again)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="log level of the worker"
    )

    # --- Validation and normalisation --------------------------------------------------
    max_event_bytes: int = Field(65536, ge=1024, description="largest accepted value, bytes")
    max_string_chars: int = Field(4096, ge=16, description="longest string anywhere in an event")
    blocked_values: tuple[str, ...] = Field(
        DEFAULT_BLOCKED_VALUES,
        description="identifier values that mean none (JSON list; compared trimmed, "
        "case-insensitively)",
    )
    blocked_patterns: tuple[str, ...] = Field(
        DEFAULT_BLOCKED_PATTERNS,
        description="regular expressions for placeholder identifier values, matched against "
        "the whole trimmed value (JSON list)",
    )
    default_phone_region: str | None = Field(
        None,
        description=(
            "ISO 3166 region for phone numbers written without +country (e.g. GB); "
            "unset means such numbers are refused as malformed"
        ),
    )
    clock_skew_tolerance_s: float = Field(
        2.0, ge=0, description="|sent_at - record time| below this is network delay, not skew"
    )
    max_future_s: float = Field(300.0, ge=0, description="how far ahead occurred_at may be")
    max_age_s: float = Field(30 * 86400.0, gt=0, description="how old occurred_at may be")
    time_policy: Literal["flag", "dead_letter"] = Field(
        "flag", description="what to do with an event outside max_future_s / max_age_s"
    )

    # --- Duplicate window --------------------------------------------------------------
    dedup_window_s: float = Field(
        7 * 86400.0, gt=0, description="how long an event_id is remembered, by arrival time"
    )
    dedup_max_ids_per_partition: int = Field(
        500_000, ge=1000, description="bound on remembered event_ids per input partition"
    )

    # --- Identity stitching -------------------------------------------------------------
    identity_limits: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_LIMITS),
        description="most values of a kind one customer may hold (JSON object kind -> n)",
    )
    identity_default_limit: int = Field(10, ge=1, description="limit of kinds not listed")
    identity_unique_kinds: frozenset[str] = Field(
        DEFAULT_UNIQUE_KINDS, description="two customers with different values never merge"
    )
    identity_priority: tuple[str, ...] = Field(
        DEFAULT_PRIORITY, description="order an event's identifiers are linked in"
    )
    pseudonymise_identifiers: bool = Field(
        False,
        description=(
            "replace identifier values by HMAC-SHA256 (keyed by TOUCHPOINT_PSEUDONYM_KEY) "
            "before they are stored or leave the worker"
        ),
    )
    pseudonym_key: SecretStr | None = Field(None, description="secret key of the pseudonyms")

    # --- Journey state ---------------------------------------------------------------
    journey_stages: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_STAGES),
        description="event type -> journey stage (JSON object)",
    )
    journey_case_closing_types: frozenset[str] = Field(
        DEFAULT_CASE_CLOSING_TYPES, description="event types that close a case (JSON list)"
    )
    journey_max_recent: int = Field(20, ge=0, description="touchpoints kept per customer")
    journey_max_open_cases: int = Field(20, ge=1, description="open cases kept per customer")
    journey_max_closed_cases: int = Field(
        50,
        ge=0,
        description="closed cases a customer remembers, so a contact from before the close does "
        "not reopen one",
    )
    journey_max_answers: int = Field(20, ge=0, description="survey answers kept per customer")
    journey_idle_s: float = Field(
        90 * 86400.0,
        gt=0,
        description="customers idle this long (event time) are compacted in the hot state",
    )
    journey_compact_interval_s: float = Field(
        60.0, gt=0, description="how often a slice of customers is checked for idleness"
    )

    stitch_dedup_max_ids: int = Field(
        1_000_000,
        ge=1000,
        description=(
            "event ids the stitch agent remembers (all partitions together) so a replayed or "
            "repeated event is never counted twice in a journey; about 100 bytes each"
        ),
    )

    # --- Scores ------------------------------------------------------------------------
    score_bucket_s: int = Field(
        60, ge=1, le=86400, description="width of the score buckets (event time, seconds)"
    )
    score_segments: tuple[str, ...] = Field(
        ("region", "product", "segment"),
        description="context dimensions that are segments of the scores (besides all, "
        "channel, journey_stage)",
    )
    effort_assisted_channels: frozenset[str] = Field(
        DEFAULT_ASSISTED_CHANNELS,
        description="channels where a person of the company is involved (contacts)",
    )
    effort_repeat_window_s: float = Field(
        7 * 86400.0, gt=0, description="a contact this soon after the case's previous one repeats"
    )
    effort_max_contacts_per_case: int = Field(
        200, ge=2, description="contacts a case remembers for the effort signals"
    )
    grace_s: float = Field(
        600.0,
        ge=0,
        description="how far behind its partition's watermark an event may be and still "
        "count in the stream's rolling views; later ones are counted as late (ClickHouse "
        "still counts them in their bucket)",
    )
    watermark_idle_s: float = Field(
        10.0,
        gt=0,
        description="a partition that brings nothing for this long (wall clock) stops holding "
        "the stream's event time back; score alerts look at windows only up to the event "
        "time every partition still sending has reached",
    )

    # --- Detractor risk ---------------------------------------------------------------
    risk_model: Path | None = Field(
        None,
        description="the detractor model (JSON artifact of `touchpoint model train`) the "
        "customer partitions score every customer with; empty: the model shipped with this "
        "version (trained on the demo's data)",
    )
    risk_enabled: bool = Field(
        True, description="score customers (customer_360.p_detractor, customer.at_risk)"
    )

    # --- Alerts ------------------------------------------------------------------------
    alerts: AlertRules = Field(
        default=AlertRules(),
        description="alert rules and webhook endpoints ([alerts] in the config file, or "
        "JSON); each endpoint's secret comes from TOUCHPOINT_WEBHOOK_SECRET_<NAME>",
    )

    # --- ClickHouse sink batching ------------------------------------------------------
    sink_batch_rows: int = Field(20_000, ge=1, description="insert when this many rows wait")
    sink_linger_s: float = Field(0.5, ge=0, description="insert at the latest this long after")
    sink_max_pending_rows: int = Field(
        200_000, ge=1, description="back-pressure: the stream waits above this many rows"
    )
    sink_retry_max_s: float = Field(30.0, gt=0, description="cap of the insert retry backoff")

    @field_validator("risk_model")
    @classmethod
    def _model_loads(cls, value: Path | None) -> Path | None:
        if value is not None:
            from streams.domain.risk import load_model

            try:
                load_model(value)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"cannot use the model {value}: {exc}") from None
        return value

    @field_validator("score_segments")
    @classmethod
    def _segments_named(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name in {"all", "channel", "journey_stage"}:
                raise ValueError(f"{name!r} is a segment already; list context dimensions only")
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"{name!r}: use lower-case letters, digits and '_'")
        return value

    @field_validator("clickhouse_cluster")
    @classmethod
    def _cluster_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("use letters, digits and '_' only (a remote_servers name)")
        return value

    @field_validator("clickhouse_database", "app_id")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", value):
            raise ValueError("use letters, digits, '_' and '-' only")
        return value

    @field_validator("clickhouse_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # without a scheme, clickhouse-connect reads "host:8123" as a bare path and
        # connects to localhost: refuse rather than talk to the wrong server
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{value!r} is not an http:// or https:// URL; write it with its scheme, "
                f"e.g. http://{value.split('://')[-1] or 'clickhouse:8123'} (https:// for TLS)"
            )
        return value

    @field_validator("topic_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @field_validator("blocked_patterns")
    @classmethod
    def _patterns_compile(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value

    @field_validator("identity_limits")
    @classmethod
    def _limits_positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {kind: n for kind, n in value.items() if n < 1}
        if bad:
            raise ValueError(f"limits must be at least 1: {bad}")
        return value

    @model_validator(mode="after")
    def _pseudonym_key_present(self) -> Settings:
        if self.pseudonymise_identifiers:
            key = self.pseudonym_key.get_secret_value() if self.pseudonym_key else ""
            if len(key) < 16:
                raise ValueError(
                    "TOUCHPOINT_PSEUDONYMISE_IDENTIFIERS needs TOUCHPOINT_PSEUDONYM_KEY "
                    "(at least 16 characters, from a secret store)"
                )
        return self

    @model_validator(mode="after")
    def _alert_segments_known(self) -> Settings:
        known = {"all", "channel", "journey_stage", *self.score_segments}
        unknown = sorted(set(self.alerts.score_drop.segments) - known)
        if unknown:
            raise ValueError(
                f"alerts.score_drop.segments {unknown} are not segments of the scores; "
                f"choose from {sorted(known)} (TOUCHPOINT_SCORE_SEGMENTS adds dimensions)"
            )
        return self

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_"):
            if not (self.kafka_sasl_mechanism and self.kafka_sasl_username):
                raise ValueError(
                    f"{self.kafka_security_protocol} needs TOUCHPOINT_KAFKA_SASL_MECHANISM, "
                    "TOUCHPOINT_KAFKA_SASL_USERNAME and TOUCHPOINT_KAFKA_SASL_PASSWORD"
                )
            if not self.kafka_sasl_password or not self.kafka_sasl_password.get_secret_value():
                raise ValueError("SASL needs TOUCHPOINT_KAFKA_SASL_PASSWORD (from a secret store)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _CONFIG_FILE is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_CONFIG_FILE))
        return tuple(sources)

    # --- Derived views -------------------------------------------------------------------
    @property
    def input_pattern(self) -> re.Pattern[str]:
        """The input topic pattern, never matching the processor's own output topics."""
        return re.compile(
            rf"(?!(?:{re.escape(self.dlq_topic)}|{re.escape(self.alerts_topic)}"
            rf"|{re.escape(self.merges_topic)})$)"
            rf"(?:{self.topic_pattern})"
        )

    @property
    def customers_partitions(self) -> int:
        """Partitions of the customers topic (``customer_partitions`` or ``topic_partitions``)."""
        return self.customer_partitions or self.topic_partitions

    @property
    def dedup_window(self) -> timedelta:
        return timedelta(seconds=self.dedup_window_s)

    def kafka_client_options(self) -> dict[str, Any]:
        """Security options in aiokafka's vocabulary, shared by every Kafka client we create."""
        options: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self.ssl_context()
        if self.kafka_security_protocol.startswith("SASL_"):
            assert self.kafka_sasl_password is not None  # checked by _sasl_complete
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        return options

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context that verifies the brokers (and presents a client cert if configured)."""
        context = ssl.create_default_context(
            cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
        )
        context.check_hostname = self.kafka_ssl_check_hostname
        if self.kafka_ssl_certfile:
            context.load_cert_chain(
                str(self.kafka_ssl_certfile),
                str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                self.kafka_ssl_key_password.get_secret_value()
                if self.kafka_ssl_key_password
                else None,
            )
        return context

    def redacted(self) -> dict[str, Any]:
        """Every setting with secrets masked, for ``touchpoint config`` and start-up logs."""
        return self.model_dump(mode="json")


def env_name(field: str) -> str:
    """A setting's environment variable: ``topic_partitions`` -> ``TOUCHPOINT_TOPIC_PARTITIONS``."""
    return ENV_PREFIX + field.upper()


def _closest(name: str, candidates: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_variables(environ: Mapping[str, str], allowed: Iterable[str] = ()) -> list[str]:
    """The ``TOUCHPOINT_*`` variables of ``environ`` that name no setting, sorted.

    Names are compared case-insensitively, as settings are read. Known besides the
    settings: :data:`OTHER_VARIABLES`, ``TOUCHPOINT_WEBHOOK_SECRET_<NAME>`` and the
    names in ``allowed`` (endpoints' own ``secret_env``).
    """
    known = {env_name(f) for f in Settings.model_fields} | OTHER_VARIABLES
    known |= {a.upper() for a in allowed}
    return sorted(
        name
        for name in environ
        if name.upper().startswith(ENV_PREFIX)
        and name.upper() not in known
        and not name.upper().startswith(_WEBHOOK_SECRET_PREFIX)
    )


def _unknown_variable_message(name: str) -> str:
    # compared without the prefix every candidate shares, or it would make anything "close"
    close = _closest(name[len(ENV_PREFIX) :].lower(), Settings.model_fields)
    hint = f"did you mean {env_name(close)}?" if close else "docs/settings.md lists every setting"
    return f"{name} is not a setting: {hint} (unset it or correct its name)"


def _source_error_message(exc: _SourceError, environ: Mapping[str, str]) -> str:
    """One line for a value pydantic-settings could not parse (JSON in a variable)."""
    match = re.search(r'field "([a-z0-9_]+)"', str(exc))
    cause = exc.__cause__
    why = cause.args[0] if isinstance(cause, json.JSONDecodeError) else str(cause or exc)
    if not match or match[1] not in Settings.model_fields:
        return f"a setting in the environment cannot be read: {why}"
    field = match[1]
    variable = next((n for n in environ if n.upper() == env_name(field)), env_name(field))
    default = Settings.model_fields[field].get_default(call_default_factory=True)
    shape = 'a JSON list, e.g. ["a", "b"]'
    if isinstance(default, dict) or hasattr(default, "model_dump"):
        shape = 'a JSON object, e.g. {"key": 1}'
    return f"{variable} is not valid JSON ({why}); give {shape}"


def describe_error(exc: Exception) -> str:
    """The one-line message for an error :func:`load_settings` raised."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    known = list(Settings.model_fields)
    parts = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and len(loc) == 1:
            close = _closest(loc[0], known)
            hint = f"did you mean {close}?" if close else "docs/settings.md lists every setting"
            parts.append(f"{loc[0]} is not a setting: {hint}")
        elif loc and loc[0] in Settings.model_fields:
            where = ".".join(loc) + f" ({env_name(loc[0])})"
            parts.append(f"{where}: {message}")
        else:
            parts.append(message)
    return "invalid configuration: " + "; ".join(parts)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings once: overrides, then environment, then the TOML file, then defaults.

    ``config_file`` defaults to ``$TOUCHPOINT_CONFIG`` when that is set.

    Raises:
        FileNotFoundError: the config file does not exist.
        ConfigurationError: a ``TOUCHPOINT_*`` variable names no setting, a JSON-valued
            variable or the TOML file does not parse.
        pydantic.ValidationError: a value is invalid (:func:`describe_error` renders it).
    """
    global _CONFIG_FILE
    import os  # the one place the process environment is read directly

    environ = dict(os.environ)
    path = config_file or (
        Path(environ["TOUCHPOINT_CONFIG"]) if environ.get("TOUCHPOINT_CONFIG") else None
    )
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    # a typo is reported before anything it may have caused (a missing password, say)
    unknown = unknown_variables(environ)
    _CONFIG_FILE = path
    try:
        settings = Settings(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(
            f"config file {path} is not valid TOML: {exc}; correct it there"
        ) from None
    except _SourceError as exc:
        if unknown:
            raise ConfigurationError(_unknown_variable_message(unknown[0])) from None
        raise ConfigurationError(_source_error_message(exc, environ)) from None
    except ValidationError:
        if unknown:
            raise ConfigurationError(_unknown_variable_message(unknown[0])) from None
        raise
    finally:
        _CONFIG_FILE = None
    custom = [e.secret_env for e in settings.alerts.endpoints if e.secret_env]
    unknown = unknown_variables(environ, allowed=custom)
    if unknown:
        raise ConfigurationError(_unknown_variable_message(unknown[0]))
    return settings
