"""The layers of ``streams/``: every module sits in one, imports run one way, no cycles.

::

    cli -> console, operate, tools, settings        (nothing imports cli but __main__)
    tools -> operate, runtime, domain, settings, console
    operate -> runtime, domain, settings, console
    runtime -> domain, settings
    console -> settings
    settings (settings, settings_reference) -> domain
    domain -> nothing in streams (schemas, sinks, the standard library, third party)

Every ``import`` and ``from ... import`` in a file counts: at module level, inside
functions and under ``if TYPE_CHECKING``. The source is read with :mod:`ast`, nothing
is imported.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STREAMS = ROOT / "streams"

#: What each layer may import from ``streams`` (its own layer included).
ALLOWED: dict[str, frozenset[str]] = {
    "domain": frozenset({"domain"}),
    "settings": frozenset({"settings", "domain"}),
    "runtime": frozenset({"runtime", "domain", "settings"}),
    "console": frozenset({"console", "settings"}),
    "operate": frozenset({"operate", "runtime", "domain", "settings", "console"}),
    "tools": frozenset({"tools", "operate", "runtime", "domain", "settings", "console"}),
    "cli": frozenset({"cli", "console", "operate", "tools", "settings"}),
    # ``python -m streams`` is the command: the one module that imports cli
    "main": frozenset({"cli"}),
    # the package itself: a docstring, nothing to import
    "package": frozenset(),
}

#: Modules that are a layer of their own, by name.
SINGLE_MODULES = {
    "streams": "package",
    "streams.__main__": "main",
    "streams.cli": "cli",
    "streams.console": "console",
    "streams.settings": "settings",
    "streams.settings_reference": "settings",
}

#: Packages whose modules all belong to the layer of the same name.
PACKAGES = ("domain", "runtime", "operate", "tools")

#: Libraries that talk to the outside world; the domain is pure logic and uses none.
IO_LIBRARIES = frozenset(
    {"faust", "mode", "aiokafka", "clickhouse_connect", "httpx", "aiohttp", "rocksdict"}
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module under ``streams/``, by dotted name."""
    return {module_name(p): p for p in sorted(STREAMS.rglob("*.py"))}


def layer(name: str) -> str | None:
    """The layer of a module of ``streams``; None for one outside every layer."""
    if name in SINGLE_MODULES:
        return SINGLE_MODULES[name]
    parts = name.split(".")
    if len(parts) >= 2 and parts[1] in PACKAGES:
        return parts[1]
    return None


def imported(
    tree: ast.AST, name: str, is_package: bool, known: Collection[str]
) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in ``tree`` (the source of module ``name``),
    wherever it stands. ``from a import b`` names ``a.b`` when that is one of the
    ``known`` modules, else ``a``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package this module is in
                package = name.split(".")
                base = package if is_package else package[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                yield node.lineno, candidate if candidate in known else source


def internal_imports() -> dict[str, list[tuple[int, str]]]:
    """For each module of ``streams``, the modules of ``streams`` it imports."""
    found: dict[str, list[tuple[int, str]]] = {}
    known = modules()
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found[name] = sorted(
            {
                (line, target)
                for line, target in imported(tree, name, path.name == "__init__.py", known)
                if target == "streams" or target.startswith("streams.")
            }
        )
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph`` (module -> modules it imports): for each import
    that lies on a cycle, the shortest cycle through it, as a path that ends where it
    starts (each cycle once, starting from its smallest name)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)

    found: set[tuple[str, ...]] = set()
    for group in groups:
        for node in group:
            for succ in graph.get(node, ()):
                if succ in group:
                    cycle = [node, *_shortest_path(graph, group, succ, node)]
                    turn = cycle.index(min(cycle[:-1]))  # the same cycle, however entered
                    found.add(tuple(cycle[turn:-1] + cycle[:turn] + [cycle[turn]]))
    return sorted(list(c) for c in found)


def _shortest_path(graph: dict[str, set[str]], group: set[str], start: str, end: str) -> list[str]:
    """Breadth first within ``group``: the modules from ``start`` to ``end``, both included."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if node == end:
            return paths[node]
        for succ in sorted(graph.get(node, ())):
            if succ in group and succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    raise AssertionError(f"{end} is not reachable from {start} in its own group")


def test_every_module_is_in_a_layer() -> None:
    outside = sorted(name for name in modules() if layer(name) is None)
    assert not outside, (
        "modules outside the layers (streams/domain, runtime, operate, tools, or cli, "
        f"console, settings): {outside}"
    )


def test_imports_run_one_way() -> None:
    wrong = []
    for name, targets in internal_imports().items():
        mine = layer(name)
        if mine is None:
            continue  # reported by test_every_module_is_in_a_layer
        for line, target in targets:
            theirs = layer(target)
            if theirs is None or theirs not in ALLOWED[mine]:
                wrong.append(f"{name}:{line} ({mine}) imports {target} ({theirs})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {
        name: {target for _, target in targets} for name, targets in internal_imports().items()
    }
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_domain_talks_to_nothing() -> None:
    wrong = []
    known = modules()
    for name, path in known.items():
        if layer(name) != "domain":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target in imported(tree, name, path.name == "__init__.py", known):
            if target.split(".")[0] in IO_LIBRARIES:
                wrong.append(f"{name}:{line} imports {target}")
    assert not wrong, "the domain is pure logic, yet:\n" + "\n".join(wrong)


# --- the checker itself ----------------------------------------------------------------


def test_every_kind_of_import_is_seen() -> None:
    source = (
        "from __future__ import annotations\n"
        "import streams.settings\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from streams.runtime.worker import Worker\n"
        "def f():\n"
        "    from streams import cli\n"
        "    import streams.tools.demo as demo\n"
        "class C:\n"
        "    def g(self):\n"
        "        from . import status\n"
    )
    known = {"streams.cli", "streams.operate.status", "streams.tools.demo"}
    seen = [t for _, t in imported(ast.parse(source), "streams.operate.report", False, known)]
    assert sorted(seen) == [
        "__future__",
        "streams.cli",  # inside a function
        "streams.operate.status",  # relative, inside a method
        "streams.runtime.worker",  # under TYPE_CHECKING
        "streams.settings",
        "streams.tools.demo",
        "typing",
    ]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}, [["a", "b", "c", "a"], ["d", "d"]]),
        ({"a": {"b", "c"}, "b": {"a"}, "c": {"a"}}, [["a", "b", "a"], ["a", "c", "a"]]),
        ({"b": {"a", "c"}, "a": {"b"}, "c": {"a"}}, [["a", "b", "a"], ["a", "b", "c", "a"]]),
    ],
)
def test_cycles_are_found_and_shown(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected
