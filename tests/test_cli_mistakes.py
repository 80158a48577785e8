"""Kind on mistakes: the real ``touchpoint`` command, run as a user runs it.

Each mistake ends the command with exactly one line on stderr that names what is wrong
and what to do, a non-zero exit, and no traceback.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.cli import build_parser
from streams.settings_reference import settings_reference
from streams.tools.embedded.process import free_port

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any TOUCHPOINT_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TOUCHPOINT_")}
    env.update(extra)
    return env


def touchpoint(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=env if env is not None else clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def refused_with_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line the command refused with (asserting there is exactly one)."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "touchpoint.toml"
    path.write_text(text)
    return path


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "shape"),
    [
        ("TOUCHPOINT_IDENTITY_LIMITS", "{x", "JSON object"),
        ("TOUCHPOINT_ALERTS", '{"score_drop": ', "JSON object"),
        ("TOUCHPOINT_BLOCKED_VALUES", "[guest]", "JSON list"),
    ],
)
def test_malformed_json_in_a_json_valued_setting_names_the_variable(
    variable: str, value: str, shape: str
) -> None:
    line = refused_with_one_line(touchpoint("config", env=clean_env(**{variable: value})))
    assert f"{variable} is not valid JSON" in line
    assert shape in line


def test_the_worker_refuses_malformed_json_before_connecting_to_anything() -> None:
    env = clean_env(TOUCHPOINT_IDENTITY_LIMITS="{x", TOUCHPOINT_KAFKA_BOOTSTRAP="127.0.0.1:1")
    line = refused_with_one_line(touchpoint("worker", env=env))
    assert "TOUCHPOINT_IDENTITY_LIMITS is not valid JSON" in line


@pytest.mark.parametrize("position", ["before", "after"])
def test_a_malformed_toml_file_names_the_file_and_the_place(tmp_path: Path, position: str) -> None:
    path = toml(tmp_path, 'kafka_bootstrap = "k:9092"\ntopic_partitions = 12 13\napp_id = "x"\n')
    args = (
        ("--config", str(path), "config")
        if position == "before"
        else ("config", "--config", str(path))
    )
    line = refused_with_one_line(touchpoint(*args))
    assert f"config file {path} is not valid TOML" in line
    assert "line 2" in line


def test_an_unknown_key_in_the_toml_file_names_the_closest_setting(tmp_path: Path) -> None:
    path = toml(tmp_path, 'kafka_bootstrapp = "k:9092"\n')
    line = refused_with_one_line(touchpoint("config", "--config", str(path)))
    assert "kafka_bootstrapp is not a setting" in line
    assert "did you mean kafka_bootstrap?" in line


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("TOUCHPOINT_KAFKA_BOOTSTRAPP", "TOUCHPOINT_KAFKA_BOOTSTRAP"),
        ("TOUCHPOINT_TOPIC_PARTITION", "TOUCHPOINT_TOPIC_PARTITIONS"),
        ("touchpoint_clickhouse_ulr", "TOUCHPOINT_CLICKHOUSE_URL"),
        ("TOUCHPOINT_WEBHOOK_SECRETS_CRM", "TOUCHPOINT_WEBHOOK_SECRET_<NAME>"),
    ],
)
def test_an_unknown_touchpoint_variable_is_refused_naming_the_closest(
    variable: str, closest: str
) -> None:
    line = refused_with_one_line(touchpoint("config", env=clean_env(**{variable: "x"})))
    assert f"{variable} is not a setting" in line
    if closest.endswith("<NAME>"):
        return  # no setting is close; the family is documented in the settings reference
    assert f"did you mean {closest}?" in line


def test_a_typo_is_reported_before_what_it_caused() -> None:
    # the misspelt password leaves SASL without one; the typo is the news, not the gap
    env = clean_env(
        TOUCHPOINT_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        TOUCHPOINT_KAFKA_SASL_MECHANISM="PLAIN",
        TOUCHPOINT_KAFKA_SASL_USERNAME="svc",
        TOUCHPOINT_KAFKA_SASL_PASWORD="s3cret",
    )
    line = refused_with_one_line(touchpoint("config", env=env))
    assert "did you mean TOUCHPOINT_KAFKA_SASL_PASSWORD?" in line
    assert "s3cret" not in line


def test_variables_that_are_not_settings_but_are_read_by_name_are_accepted(
    tmp_path: Path,
) -> None:
    env = clean_env(
        TOUCHPOINT_CONFIG=str(toml(tmp_path, 'app_id = "from-file"\n')),
        TOUCHPOINT_CACHE_DIR=str(tmp_path),
        TOUCHPOINT_WEBHOOK_SECRET_CRM="whsec_c2VjcmV0",
        TOUCHPOINT_APP_ID="from-env",
    )
    result = touchpoint("config", env=env)
    assert result.returncode == 0, result.stderr
    assert '"app_id": "from-env"' in result.stdout


def test_an_endpoints_own_secret_variable_is_accepted() -> None:
    alerts = (
        '{"endpoints": [{"name": "crm", "url": "https://hooks.example.com/x", '
        '"secret_env": "TOUCHPOINT_CRM_HOOK_KEY"}]}'
    )
    env = clean_env(TOUCHPOINT_ALERTS=alerts, TOUCHPOINT_CRM_HOOK_KEY="whsec_c2VjcmV0")
    result = touchpoint("config", env=env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "url", ["ch.internal:8123", "localhost:8123", "ch.internal", "ftp://ch:21"]
)
def test_a_clickhouse_url_without_an_http_scheme_is_refused_before_connecting(url: str) -> None:
    # before, "ch.internal:8123" was read as a path on localhost: the wrong server, silently
    line = refused_with_one_line(
        touchpoint("migrate", env=clean_env(TOUCHPOINT_CLICKHOUSE_URL=url))
    )
    assert "TOUCHPOINT_CLICKHOUSE_URL" in line
    assert "http://" in line


def test_an_invalid_value_names_the_setting_and_its_variable() -> None:
    line = refused_with_one_line(
        touchpoint("config", env=clean_env(TOUCHPOINT_TOPIC_PARTITIONS="0"))
    )
    assert "topic_partitions (TOUCHPOINT_TOPIC_PARTITIONS)" in line


# --- services ------------------------------------------------------------------------------


def test_generate_gives_up_on_an_unreachable_broker_after_a_bounded_wait() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = touchpoint(
        "generate",
        "--events",
        "5",
        "--connect-timeout",
        "2",
        env=clean_env(TOUCHPOINT_KAFKA_BOOTSTRAP=bootstrap),
    )
    elapsed = time.monotonic() - started
    line = refused_with_one_line(result)
    assert f"cannot reach Kafka at {bootstrap} within 2 s" in line
    assert "TOUCHPOINT_KAFKA_BOOTSTRAP" in line
    assert elapsed >= 2  # it did wait for the broker
    assert result.stdout == ""  # nothing claimed as published


def test_demo_refuses_the_current_directory_and_deletes_nothing(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    line = refused_with_one_line(touchpoint("demo", "--dir", ".", cwd=tmp_path))
    assert "current directory" in line
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_demo_refuses_a_non_empty_directory_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    line = refused_with_one_line(touchpoint("demo", "--dir", "mine", cwd=tmp_path))
    assert "not created by touchpoint demo" in line
    assert (tmp_path / "mine" / "notes.txt").exists()


# --- the command line itself ---------------------------------------------------------------


def test_version_is_printed() -> None:
    result = touchpoint("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("touchpoint ")
    assert result.stdout.split()[1][0].isdigit()


def test_config_is_accepted_after_the_command_as_well_as_before(tmp_path: Path) -> None:
    path = str(toml(tmp_path, 'app_id = "from-file"\n'))
    for args in (("--config", path, "config"), ("config", "--config", path)):
        result = touchpoint(*args)
        assert result.returncode == 0, result.stderr
        assert '"app_id": "from-file"' in result.stdout


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{parser.prog} {name}".removeprefix("touchpoint ")] = sub
                found.update(_subcommands(sub))
    return found


def _help_entry(text: str, option: str) -> str:
    """The lines of ``--help`` that describe ``option``, joined into one."""
    options = text[text.index("options:") :].split("\n")
    for i, line in enumerate(options):
        if line.startswith("  -") and option in line.split("  ")[1]:
            rest = [x for x in options[i + 1 :]]
            end = next((j for j, x in enumerate(rest) if not x.startswith("    ")), len(rest))
            return " ".join(" ".join([line, *rest[:end]]).split())
    raise AssertionError(f"{option} is not in the help:\n{text}")


def test_every_help_shows_every_default() -> None:
    for name, sub in _subcommands(build_parser()).items():
        text = sub.format_help()
        for action in sub._actions:
            if not action.option_strings or action.default in (None, argparse.SUPPRESS):
                continue
            if action.default is False or isinstance(action, argparse._HelpAction):
                continue  # an off switch: nothing to show
            shown = action.default.name if isinstance(action.default, Path) else action.default
            entry = _help_entry(text, action.option_strings[-1])
            assert f"default: {shown}" in entry or f"default {shown}" in entry, (name, entry)


@pytest.mark.parametrize("command", ["worker", "migrate", "config"])
def test_the_help_of_commands_that_read_settings_points_to_config_and_the_reference(
    command: str,
) -> None:
    result = touchpoint(command, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "`touchpoint config`" in text
    assert "docs/settings.md" in text


def test_the_settings_reference_is_the_one_the_model_gives() -> None:
    checked_in = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert checked_in == settings_reference(), (
        "docs/settings.md is out of date: touchpoint config --reference > docs/settings.md"
    )


def test_the_settings_reference_lists_every_setting_with_its_variable() -> None:
    from streams.settings import Settings, env_name

    page = settings_reference()
    for name, field in Settings.model_fields.items():
        assert f"| `{name}` | `{env_name(name)}` |" in page
        assert field.description, f"{name} has no description for the reference"
