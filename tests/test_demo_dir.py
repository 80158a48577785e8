"""``touchpoint demo --dir``: a command never deletes what it did not create."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.tools.demo import DEMO_DIR_MARKER, DemoDirRefused, prepare_demo_dir


def test_a_new_directory_is_created_and_marked_as_the_demos(tmp_path: Path) -> None:
    home = prepare_demo_dir(tmp_path / "a" / "demo", cwd=tmp_path)
    assert home.is_dir()
    assert sorted(p.name for p in home.iterdir()) == [DEMO_DIR_MARKER]


def test_an_empty_directory_is_used_and_marked(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    home = prepare_demo_dir(tmp_path / "empty", cwd=tmp_path)
    assert (home / DEMO_DIR_MARKER).is_file()


def test_a_directory_an_earlier_demo_created_is_emptied(tmp_path: Path) -> None:
    home = prepare_demo_dir(tmp_path / "demo", cwd=tmp_path)
    (home / "kafka").mkdir()
    (home / "kafka" / "log").write_text("old run")
    again = prepare_demo_dir(tmp_path / "demo", cwd=tmp_path)
    assert sorted(p.name for p in again.iterdir()) == [DEMO_DIR_MARKER]


def test_a_non_empty_directory_without_the_marker_is_refused_and_kept(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(DemoDirRefused, match="not created by touchpoint demo"):
        prepare_demo_dir(mine, cwd=tmp_path)
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert not (mine / DEMO_DIR_MARKER).exists()


@pytest.mark.parametrize("given", [".", "..", "./", "sub/.."])
def test_the_current_directory_and_its_parents_are_refused_even_when_marked(
    tmp_path: Path, given: str
) -> None:
    cwd = tmp_path / "work"
    (cwd / "sub").mkdir(parents=True)
    (cwd / "precious.txt").write_text("keep me")
    (cwd / DEMO_DIR_MARKER).write_text("")  # a marker does not make the caller's tree the demo's
    with pytest.raises(DemoDirRefused, match="current directory"):
        prepare_demo_dir(cwd / given, cwd=cwd)
    assert (cwd / "precious.txt").read_text() == "keep me"


def test_dot_is_refused_relative_to_the_real_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(DemoDirRefused):
        prepare_demo_dir(Path("."))
    assert (tmp_path / "precious.txt").exists()


def test_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("x")
    with pytest.raises(DemoDirRefused, match="is a file"):
        prepare_demo_dir(tmp_path / "notes", cwd=tmp_path)


def test_a_symbolic_link_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / DEMO_DIR_MARKER).write_text("")
    (real / "data").write_text("x")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(DemoDirRefused, match="symbolic link"):
        prepare_demo_dir(tmp_path / "link", cwd=tmp_path)
    assert (real / "data").exists()
