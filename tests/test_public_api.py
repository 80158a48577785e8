"""Every module says what it exports, and exports what it says."""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest

import schemas
import sinks
import streams
from streams.cli import build_parser, main

MODULES = sorted(
    info.name
    for package in (streams, schemas, sinks)
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_each_module_declares_all_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if name == "streams.tools.embedded":
        return  # a namespace for the embedded servers; nothing to export
    assert exported is not None, f"{name} has no __all__"
    for attribute in exported:
        assert hasattr(module, attribute), f"{name}.__all__ names missing {attribute}"


def test_schemas_and_sinks_import_nothing_from_streams() -> None:
    for name in MODULES:
        if name.startswith(("schemas", "sinks")):
            source = importlib.import_module(name).__loader__.get_source(name)  # type: ignore[union-attr]
            assert "from streams" not in source and "import streams" not in source, name
        if name.startswith("schemas"):
            source = importlib.import_module(name).__loader__.get_source(name)  # type: ignore[union-attr]
            assert "from sinks" not in source, name


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"worker", "demo", "migrate", "generate", "schema", "benchmark"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: touchpoint" in capsys.readouterr().out


def test_schema_command_prints_the_event_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["required"]) == {"event_id", "occurred_at", "type", "identifiers"}
    assert schema["$schema"].endswith("2020-12/schema")
