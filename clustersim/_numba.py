"""numba set-up shared by every kernel module: a writable cache, then ``njit``.

numba writes its cache beside the source by default (``__pycache__``), which a read-only
install (a system site-packages, a container image, a wheel installed by another user) does
not allow; numba then tries its own user-wide folder, and with no writable folder at all a
``cache=True`` kernel fails at import. So before numba is imported we point
``NUMBA_CACHE_DIR`` (numba's documented setting for this) at a user cache folder,
``$XDG_CACHE_HOME/clustersim/numba`` (``~/.cache`` when unset or empty), else a per-user
folder in the temporary directory, unless the user chose a writable one; if none can be
written, kernels are compiled in each process without a cache. Kernels are pure functions over flat
numpy arrays with ``cache=True`` and never ``parallel=True`` (it makes forked process pools
hang).

>>> from clustersim._numba import njit
>>> njit(lambda x: 2 * x, cache=False)(3)   # a lambda has no source file to cache beside
6
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["njit", "CACHE_DIR"]


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".probe"
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


def _cache_dirs() -> list[Path]:
    """Candidate cache folders, best first: the user's choice, the XDG cache (an empty
    variable counts as unset), a per-user folder in the temporary directory."""
    dirs = [Path(os.environ["NUMBA_CACHE_DIR"])] if os.environ.get("NUMBA_CACHE_DIR") else []
    cache_home = os.environ.get("XDG_CACHE_HOME")
    if not cache_home:
        try:
            cache_home = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no passwd entry
            cache_home = None
    if cache_home:
        dirs.append(Path(cache_home) / "clustersim" / "numba")
    return dirs + [Path(tempfile.gettempdir()) / f"clustersim-numba-{os.getuid()}"]


def _choose_cache_dir() -> str | None:
    """The first writable candidate, set as ``NUMBA_CACHE_DIR``; None when none is."""
    for candidate in _cache_dirs():
        if _writable(candidate):
            os.environ["NUMBA_CACHE_DIR"] = str(candidate)
            return str(candidate)
    return None


CACHE_DIR = _choose_cache_dir()

import numba  # noqa: E402  (must follow the cache-dir set-up)


def njit(*args, **kwargs):
    """``numba.njit`` with the project's defaults: cached, never parallel."""
    kwargs.setdefault("cache", CACHE_DIR is not None)  # no writable folder: compile per process
    kwargs.setdefault("nogil", True)
    if kwargs.get("parallel"):
        raise ValueError("parallel=True makes forked process pools hang; do not use it")
    if len(args) == 1 and callable(args[0]):
        return numba.njit(**kwargs)(args[0])
    return numba.njit(*args, **kwargs)
