"""Alert rules and webhook endpoints, declared in configuration and checked at start.

In the TOML configuration file they live under ``[alerts]``::

    [alerts.score_drop]
    metrics = ["nps", "csat", "ces", "effort"]
    segments = ["all", "channel"]
    window = "24h"
    baseline = "7d"

    [[alerts.endpoints]]
    name = "crm"
    url = "https://hooks.example.com/cx"
    types = ["customer.detractor", "customer.effort_spike"]

or, from the environment, as JSON in ``TOUCHPOINT_ALERTS``. Durations are seconds or a
number with ``s``, ``m``, ``h`` or ``d``. Each endpoint's signing secret comes from the
environment variable its ``secret_env`` names (default
``TOUCHPOINT_WEBHOOK_SECRET_<NAME>``), never from the file.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from statistics import NormalDist
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

__all__ = [
    "ALERT_TYPES",
    "AlertRules",
    "AtRiskRule",
    "DetractorRule",
    "EffortSpikeRule",
    "Endpoint",
    "FollowupOverdueRule",
    "ScoreDropRule",
    "decode_secret",
    "parse_duration",
    "signing_keys",
]

AlertType = Literal[
    "score.dropped",
    "score.recovered",
    "customer.detractor",
    "customer.effort_spike",
    "customer.at_risk",
    "customer.followup_overdue",
]
ALERT_TYPES: tuple[AlertType, ...] = get_args(AlertType)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"24h"`` or ``"7d"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. 90s, 15m, 24h, 7d)")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScoreDropRule(_Rule):
    """``score.dropped`` when a segment's score over ``window`` is significantly worse than
    over the ``baseline`` before it; ``score.recovered`` when it is no longer."""

    enabled: bool = True
    metrics: tuple[Literal["nps", "csat", "ces", "effort"], ...] = ("nps", "csat", "ces", "effort")
    #: segment kinds: all, channel, journey_stage and the configured context dimensions
    segments: tuple[str, ...] = ("all", "channel", "journey_stage")
    window: Duration = 86400.0
    baseline: Duration = 7 * 86400.0
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    #: answers (contacts, for effort) needed in the window and in the baseline
    min_responses: int = Field(default=30, ge=2)
    #: after a drop fired, the same segment and metric stays quiet this long (event time)
    cooldown: Duration = 6 * 3600.0
    #: hysteresis: recovered once the worsening is under this many standard errors
    recover_z: float = Field(default=1.0, ge=0)
    #: how often (wall clock) the segments that got new answers are looked at
    evaluate_every: Duration = 1.0

    @property
    def z_critical(self) -> float:
        """Two-sided critical value of the confidence (1.96 at 95 %)."""
        return NormalDist().inv_cdf(0.5 + self.confidence / 2)

    @model_validator(mode="after")
    def _hysteresis(self) -> ScoreDropRule:
        if self.recover_z >= self.z_critical:
            raise ValueError(
                f"recover_z ({self.recover_z}) must be below the critical value of the "
                f"confidence ({self.z_critical:.2f}), or a drop would recover at once"
            )
        return self


class DetractorRule(_Rule):
    """``customer.detractor``: an NPS answer of 0..6, or a CSAT or CES answer of at most
    ``bottom_box`` (both scales start at 1)."""

    enabled: bool = True
    metrics: tuple[Literal["nps", "csat", "ces"], ...] = ("nps", "csat", "ces")
    bottom_box: int = Field(default=1, ge=1)
    #: touchpoints of the customer's recent journey the payload carries
    recent_touchpoints: int = Field(default=10, ge=0, le=20)


class EffortSpikeRule(_Rule):
    """``customer.effort_spike``: ``contacts`` assisted contacts on one case within
    ``within``, or the case's effort points (sum over its contacts) above
    ``case_points_above``; once per customer and case."""

    enabled: bool = True
    contacts: int = Field(default=3, ge=2)
    within: Duration = 86400.0
    case_points_above: int | None = Field(default=100, ge=1)


class AtRiskRule(_Rule):
    """``customer.at_risk``: the customer's detractor probability (the model's score,
    ``streams.domain.risk``) reaches ``threshold``; once per crossing: armed again only
    after it falls below ``rearm_below``. The payload names the ``reasons`` features
    that raise the score most."""

    enabled: bool = True
    #: the shipped model's detractor band starts there (twice the demo's detractor rate)
    threshold: float = Field(default=0.35, gt=0, lt=1)
    rearm_below: float = Field(default=0.3, gt=0, lt=1)
    reasons: int = Field(default=3, ge=0, le=10)

    @model_validator(mode="after")
    def _hysteresis(self) -> AtRiskRule:
        if self.rearm_below >= self.threshold:
            raise ValueError(
                f"rearm_below ({self.rearm_below}) must be below the threshold "
                f"({self.threshold}), or a customer near it would fire again and again"
            )
        return self


class FollowupOverdueRule(_Rule):
    """Closed-loop follow-up: every detractor answer (as ``detractor`` defines it) opens
    a follow-up due ``due`` later (event time); ``customer.followup_overdue`` fires once
    when the due time passes with no outbound contact and no resolution of its case.
    ``enabled`` switches the alert only: the ``followups`` table is always kept."""

    enabled: bool = True
    due: Duration = 48 * 3600.0


class Endpoint(_Rule):
    """A webhook endpoint: where, which alerts, how hard to try."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    url: str
    #: environment variable holding the ``whsec_...`` secret; default
    #: TOUCHPOINT_WEBHOOK_SECRET_<NAME>
    secret_env: str | None = None
    types: tuple[AlertType, ...] = ALERT_TYPES
    #: ``kind:value`` segments (``channel:web``); empty means every segment
    segments: tuple[str, ...] = ()
    timeout: Duration = 5.0
    max_attempts: int = Field(default=8, ge=1)
    #: give up (dead-letter) once this long has passed since the first attempt
    retry_budget: Duration = 3600.0
    #: first backoff; doubles per attempt, with full jitter, capped by ``max_backoff``
    backoff: Duration = 1.0
    max_backoff: Duration = 300.0
    #: alerts waiting for this endpoint; beyond it new ones are dead-lettered at once
    queue_size: int = Field(default=10_000, ge=1)
    #: deliveries in flight at once
    concurrency: int = Field(default=4, ge=1, le=64)
    #: plain http:// (never for production)
    allow_http: bool = False
    #: private, loopback, link-local and metadata addresses (never for production)
    allow_private: bool = False

    @field_validator("url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s?#]+", value):
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value

    @property
    def secret_variable(self) -> str:
        return self.secret_env or f"TOUCHPOINT_WEBHOOK_SECRET_{self.name.upper()}"

    def wants(self, alert_type: str, segments: tuple[str, ...]) -> bool:
        """Whether this endpoint takes an alert of this type about these segments."""
        if alert_type not in self.types:
            return False
        return not self.segments or any(s in self.segments for s in segments)


class AlertRules(_Rule):
    """Every alert rule and endpoint."""

    score_drop: ScoreDropRule = ScoreDropRule()
    detractor: DetractorRule = DetractorRule()
    effort_spike: EffortSpikeRule = EffortSpikeRule()
    at_risk: AtRiskRule = AtRiskRule()
    followup_overdue: FollowupOverdueRule = FollowupOverdueRule()
    endpoints: tuple[Endpoint, ...] = ()
    #: largest response body read from an endpoint (the rest is ignored)
    max_response_bytes: int = Field(default=65536, ge=1024)

    @field_validator("endpoints")
    @classmethod
    def _unique_names(cls, value: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
        names = [e.name for e in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"endpoint names must be unique: {twice}")
        for endpoint in value:
            if endpoint.url.startswith("http://") and not endpoint.allow_http:
                raise ValueError(
                    f"endpoint {endpoint.name}: {endpoint.url} is not HTTPS; use https:// "
                    "(or allow_http = true for a test receiver)"
                )
        return value


def signing_keys(rules: AlertRules, environ: Mapping[str, str]) -> dict[str, bytes]:
    """Each endpoint's HMAC key from its ``whsec_`` secret in the environment.

    Raises ``ValueError`` naming every endpoint whose secret is missing or malformed.
    """
    keys: dict[str, bytes] = {}
    problems = []
    for endpoint in rules.endpoints:
        variable = endpoint.secret_variable
        secret = environ.get(variable, "")
        if not secret:
            problems.append(f"endpoint {endpoint.name}: set {variable} to its whsec_ secret")
            continue
        try:
            keys[endpoint.name] = decode_secret(secret)
        except ValueError as exc:
            problems.append(f"endpoint {endpoint.name}: {variable} {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return keys


def decode_secret(secret: str) -> bytes:
    """The key of a ``whsec_<base64>`` secret (at least 16 bytes)."""
    if not secret.startswith("whsec_"):
        raise ValueError("must start with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        raise ValueError("is not whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValueError("holds fewer than 16 bytes of key")
    return key
