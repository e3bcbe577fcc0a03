"""numba set-up shared by every kernel module: a writable cache, then ``njit``.

numba writes its cache beside the source by default; in a read-only install that fails, so
before numba is imported we point ``NUMBA_CACHE_DIR`` at a user cache folder unless the user
chose one. Kernels are pure functions over flat numpy arrays with ``cache=True`` and never
``parallel=True`` (it makes forked process pools hang).

>>> from clustersim._numba import njit
>>> njit(lambda x: 2 * x, cache=False)(3)   # a lambda has no source file to cache beside
6
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["njit"]


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".probe"
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


if "NUMBA_CACHE_DIR" not in os.environ:
    for candidate in (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                      / "clustersim" / "numba",
                      Path(tempfile.gettempdir()) / f"clustersim-numba-{os.getuid()}"):
        if _writable(candidate):
            os.environ["NUMBA_CACHE_DIR"] = str(candidate)
            break

import numba  # noqa: E402  (must follow the cache-dir set-up)


def njit(*args, **kwargs):
    """``numba.njit`` with the project's defaults: cached, never parallel."""
    kwargs.setdefault("cache", True)
    kwargs.setdefault("nogil", True)
    if kwargs.get("parallel"):
        raise ValueError("parallel=True makes forked process pools hang; do not use it")
    if len(args) == 1 and callable(args[0]):
        return numba.njit(**kwargs)(args[0])
    return numba.njit(*args, **kwargs)
