"""Where numba caches the kernels: a folder the user can write, never the package's own
(a read-only install), and no cache at all rather than an import error when nothing is
writable. The install-and-chmod test of a wheel is in benchmarks/README.md."""

from __future__ import annotations

from pathlib import Path

from clustersim import _numba


def test_the_user_cache_folder_by_xdg_rules(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty counts as unset, not as the cwd
    assert _numba._cache_dirs()[0] == tmp_path / ".cache" / "clustersim" / "numba"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _numba._choose_cache_dir() == str(tmp_path / "xdg" / "clustersim" / "numba")


def test_a_writable_folder_the_user_chose_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert _numba._choose_cache_dir() == str(tmp_path / "mine")


def test_nothing_writable_means_no_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setattr(_numba, "_writable", lambda path: False)
    assert _numba._choose_cache_dir() is None


def test_the_kernels_cache_outside_the_package():
    package = Path(_numba.__file__).resolve().parent
    assert _numba.CACHE_DIR is not None
    assert package not in Path(_numba.CACHE_DIR).resolve().parents
