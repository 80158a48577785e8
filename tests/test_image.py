"""The worker image holds every module the worker imports, and none of the dev tooling.

What the build copies is read from deploy/Dockerfile and .dockerignore (the last
matching pattern wins, and a pattern matching a directory covers what is under it, as
Docker applies them); the worker then starts from a copy of exactly those files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Run from a checkout only: `touchpoint demo`, `benchmark` and `generate`.
DEV_TOOLING = {
    "streams/tools/generator.py",
    "streams/tools/benchmark.py",
    "streams/tools/embedded/clickhouse.py",
    "streams/tools/embedded/kafka.py",
    "streams/tools/embedded/kafka-pom.xml",
}


def _pattern(glob: str) -> re.Pattern[str]:
    regex = ""
    for part in re.split(r"(\*\*|\*|\?)", glob.strip("/")):
        regex += {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.compile(regex)


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(excluded, pattern) in file order."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((not line.startswith("!"), _pattern(line.removeprefix("!"))))
    return rules


def in_context(path: str) -> bool:
    """Whether the build context holds ``path`` (relative to the repository root)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for excluded, pattern in ignore_rules():
        if any(pattern.fullmatch(c) for c in candidates):
            included = not excluded
    return included


def copied() -> list[str]:
    """Repository files the build stage copies (COPY without --from), after .dockerignore."""
    sources: list[str] = []
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return sorted(
        f
        for f in tracked
        if any(f == s or f.startswith(s.rstrip("/") + "/") for s in sources) and in_context(f)
    )


def test_the_image_leaves_the_dev_tooling_out() -> None:
    files = set(copied())
    assert all((ROOT / f).exists() for f in DEV_TOOLING)
    assert files & DEV_TOOLING == set()
    assert {
        "streams/runtime/app.py",
        "streams/runtime/web.py",
        "sinks/clickhouse.py",
        "pyproject.toml",
    } <= files
    assert not any(f.startswith(("tests/", "deploy/", ".ci/")) for f in files)


WORKER_IMPORTS = """
import sys
from pathlib import Path
from streams.cli import build_parser
build_parser().parse_args(["worker"])
# what `touchpoint worker` imports on its way to running
from faust import Worker
import schemas.alert_rules, sinks.migrations, streams.runtime.topics
from streams.runtime.app import clean_run, create_worker
from streams.settings import Settings
worker = create_worker(Settings(store="memory://", data_dir=Path(sys.argv[1])), ())
import streams
print(streams.__file__)
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in ("streams", "schemas", "sinks"))))
"""


def test_the_worker_starts_from_the_files_the_image_holds(tmp_path: Path) -> None:
    image = tmp_path / "image"
    for f in copied():
        (image / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, image / f)
    result = subprocess.run(
        [sys.executable, "-c", WORKER_IMPORTS, str(tmp_path / "state")],
        cwd=tmp_path,
        env={"PYTHONPATH": str(image), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    location, modules = result.stdout.strip().splitlines()[-2:]
    assert location.startswith(str(image))  # the copy ran, not the checkout
    loaded = {m.replace(".", "/") + ".py" for m in modules.split()}
    assert loaded & DEV_TOOLING == set()
    probe = subprocess.run(
        [sys.executable, "-m", "streams.runtime.web", "--help"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(image), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0 and "live" in probe.stdout
