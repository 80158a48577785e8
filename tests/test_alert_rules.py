"""Alert rules and endpoints are validated at start, with errors that say what to do."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from schemas.alert_rules import (
    AlertRules,
    Endpoint,
    ScoreDropRule,
    decode_secret,
    parse_duration,
    signing_keys,
)
from streams.settings import Settings

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        ("90", 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("1.5h", 5400.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5w", "-3s", True])
def test_bad_durations_say_how_to_write_one(text: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_the_default_critical_value_is_1_96() -> None:
    assert ScoreDropRule().z_critical == pytest.approx(1.959964, abs=1e-6)
    assert ScoreDropRule(confidence=0.99).z_critical == pytest.approx(2.575829, abs=1e-6)


def test_a_recovery_threshold_at_or_above_the_critical_value_is_refused() -> None:
    with pytest.raises(ValidationError, match="recover_z"):
        ScoreDropRule(recover_z=2.0)


def test_plain_http_needs_an_explicit_allowance() -> None:
    with pytest.raises(ValidationError, match="not HTTPS"):
        AlertRules(endpoints=(Endpoint(name="crm", url="http://hooks.example.com/x"),))
    rules = AlertRules(
        endpoints=(Endpoint(name="crm", url="http://hooks.example.com/x", allow_http=True),)
    )
    assert rules.endpoints[0].allow_http


def test_endpoint_names_are_unique_and_plain() -> None:
    one = Endpoint(name="crm", url="https://a.example/x")
    with pytest.raises(ValidationError, match="unique"):
        AlertRules(endpoints=(one, one))
    with pytest.raises(ValidationError):
        Endpoint(name="CRM hook", url="https://a.example/x")
    with pytest.raises(ValidationError, match="not an http"):
        Endpoint(name="crm", url="ftp://a.example/x")


def test_unknown_fields_are_errors_not_silently_ignored() -> None:
    with pytest.raises(ValidationError, match="windw"):
        ScoreDropRule.model_validate({"windw": "24h"})


def test_score_drop_segments_must_be_segments_of_the_scores() -> None:
    with pytest.raises(ValidationError, match="not segments of the scores"):
        Settings(alerts={"score_drop": {"segments": ["channel", "country"]}})
    settings = Settings(
        score_segments=("country",), alerts={"score_drop": {"segments": ["channel", "country"]}}
    )
    assert settings.alerts.score_drop.segments == ("channel", "country")


def test_endpoint_filters() -> None:
    endpoint = Endpoint(
        name="crm",
        url="https://a.example/x",
        types=("customer.detractor",),
        segments=("channel:web",),
    )
    assert endpoint.wants("customer.detractor", ("all:all", "channel:web"))
    assert not endpoint.wants("customer.detractor", ("all:all", "channel:chat"))
    assert not endpoint.wants("score.dropped", ("channel:web",))
    anything = Endpoint(name="all", url="https://a.example/x")
    assert anything.wants("score.recovered", ("journey_stage:support",))


def test_signing_keys_come_from_the_environment() -> None:
    rules = AlertRules(
        endpoints=(
            Endpoint(name="crm", url="https://a.example/x"),
            Endpoint(name="ops", url="https://b.example/x", secret_env="OPS_HOOK_SECRET"),
        )
    )
    keys = signing_keys(rules, {"TOUCHPOINT_WEBHOOK_SECRET_CRM": SECRET, "OPS_HOOK_SECRET": SECRET})
    assert keys == {"crm": b"k" * 24, "ops": b"k" * 24}
    with pytest.raises(ValueError) as missing:
        signing_keys(rules, {"OPS_HOOK_SECRET": "not-a-secret"})
    message = str(missing.value)
    assert "set TOUCHPOINT_WEBHOOK_SECRET_CRM" in message
    assert "OPS_HOOK_SECRET must start with whsec_" in message


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("whsec_!!!", "base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "fewer than 16 bytes"),
        (base64.b64encode(b"k" * 24).decode(), "whsec_"),
    ],
)
def test_malformed_secrets(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_secret(secret)
