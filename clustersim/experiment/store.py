"""A results store that survives a crash or Ctrl-C: every finished scenario is kept at once.

Layout under the output directory::

    parts/000003-1f0c9a4e2b7d5a60.json   one finished scenario (index, name, config hash, row)
    results.parquet, results.csv         every scenario of the sweep, by index (at the end)

A part is written to a temporary file, flushed to disk and renamed into place, so a part file
is either whole or absent, never torn. Its name holds the scenario index and a key made of the
scenario name and the hash of its fully resolved configuration: resuming skips a scenario only
if a part with the same index, name and configuration exists, so a changed experiment re-runs
exactly the scenarios that changed, and one index has at most one part (no duplicate rows).

Parts are JSON rather than Parquet: one small row per file is written in microseconds, keeps
every value's type exactly, and can be read by eye after a crash.

>>> import tempfile
>>> store = ResultStore(tempfile.mkdtemp())
>>> part = PartId(0, "demo/0000", "abc123")
>>> store.has(part)
False
>>> _ = store.put(part, {"scenario": "demo/0000", "status": "ok", "step_time_s": 1.25})
>>> store.has(part), store.has(PartId(0, "demo/0000", "changed"))
(True, False)
>>> store.combine([part])[["scenario", "status", "step_time_s"]].to_dict("records")
[{'scenario': 'demo/0000', 'status': 'ok', 'step_time_s': 1.25}]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:   # Windows has no advisory file locks: one run per directory is the user's
    fcntl = None

from clustersim.errors import InputError
from clustersim.experiment.columns import normalise_row, result_frame
from clustersim.version import __version__

__all__ = ["PartId", "ResultStore", "config_hash", "IDENTITY_EXCLUDES"]

# Parts of an experiment that do not change a scenario's result, so not part of its identity.
IDENTITY_EXCLUDES = ("output", "description", "sweep")


def config_hash(config: Any) -> str:
    """A stable hash of a scenario's fully resolved configuration (and the simulator version).

    Accepts a pydantic model (defaults filled in, so writing a default out changes nothing) or
    raw data (a scenario that failed validation). Output settings do not count.

    >>> from clustersim.config.experiment import ExperimentConfig
    >>> data = {"name": "x", "cluster": {"topology": "dgx-h100"}, "model": "llama3-8b",
    ...         "training": {"global_batch": 8}}
    >>> a = config_hash(ExperimentConfig.model_validate(data))
    >>> b = config_hash(ExperimentConfig.model_validate({**data, "output": {"dir": "elsewhere"},
    ...     "training": {"global_batch": 8, "micro_batch": 1}}))
    >>> a == b, len(a)
    (True, 64)
    """
    if hasattr(config, "model_dump"):
        data = config.model_dump(mode="json", exclude=set(IDENTITY_EXCLUDES))
    else:
        data = {k: v for k, v in dict(config).items() if k not in IDENTITY_EXCLUDES}
    text = json.dumps({"clustersim": __version__, "config": data}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class PartId:
    """Who a stored row belongs to: scenario index, scenario name, configuration hash."""

    index: int
    scenario: str
    config_hash: str

    @property
    def filename(self) -> str:
        key = hashlib.sha256(f"{self.scenario}\0{self.config_hash}".encode()).hexdigest()
        return f"{self.index:06d}-{key[:16]}.json"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _lock(directory: Path):
    """The open, exclusively locked ``directory/.lock``; an InputError when another run holds
    it (None where the system has no advisory locks)."""
    if fcntl is None:
        return None
    handle = open(directory / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(f"another run is writing {directory} (its .lock is held); wait for "
                         f"it to finish or choose another --out") from None
    return handle


class ResultStore:
    """Finished scenarios under ``directory/parts``; combined into results files at the end.

    Without ``resume`` the parts of an earlier run (and its results files) are removed first.
    A store holds the directory's lock (``.lock``, an advisory ``flock`` the system drops
    when the process ends) until :meth:`close`: a second run into the same directory is an
    InputError instead of deleting the first's parts. A directory that cannot be written is
    an InputError naming it.
    """

    def __init__(self, directory: str | Path, resume: bool = False):
        self.directory = Path(directory)
        self.parts = self.directory / "parts"
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            self._lock = _lock(self.directory)
            for leftover in self.parts.glob(".*.tmp"):  # a write cut short by a crash
                leftover.unlink(missing_ok=True)
            for leftover in self.directory.glob(".results.*.tmp"):
                leftover.unlink(missing_ok=True)
            if not resume:
                for old in self.parts.glob("*.json"):
                    old.unlink()
                for name in ("results.parquet", "results.csv"):
                    (self.directory / name).unlink(missing_ok=True)
        except OSError as exc:
            raise InputError(f"cannot write results to {self.directory}: "
                             f"{exc.strerror or exc}; choose another --out") from None

    def close(self) -> None:
        """Release the directory's lock (also released when the process ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def has(self, part: PartId) -> bool:
        """Whether this scenario, with this configuration, is already stored."""
        return (self.parts / part.filename).exists()

    def put(self, part: PartId, row: Mapping[str, Any]) -> Path:
        """Store one finished scenario at once; replaces a stale part of the same index."""
        record = {"index": part.index, "scenario": part.scenario,
                  "config_hash": part.config_hash, "row": normalise_row(row)}
        path = self.parts / part.filename
        _write_atomically(path, json.dumps(record, sort_keys=True).encode())
        for stale in self.parts.glob(f"{part.index:06d}-*.json"):
            if stale.name != part.filename:
                stale.unlink(missing_ok=True)
        return path

    def get(self, part: PartId) -> dict[str, Any]:
        """The stored row of one scenario; KeyError if it is not stored."""
        try:
            record = json.loads((self.parts / part.filename).read_text())
        except FileNotFoundError:
            raise KeyError(part.scenario) from None
        if record["scenario"] != part.scenario or record["config_hash"] != part.config_hash:
            raise KeyError(part.scenario)  # a hash-prefix collision: treat as not stored
        return record["row"]

    def combine(self, parts: Sequence[PartId], swept_keys: Sequence[str] = ()):
        """One DataFrame of the given scenarios (sorted by index), written as Parquet and CSV.

        Every scenario must be stored; parts of scenarios not listed are ignored.
        """
        ordered = sorted(parts, key=lambda p: p.index)
        frame = result_frame([self.get(p) for p in ordered], swept_keys)
        for name, write in (("results.parquet", lambda f, p: f.to_parquet(p, index=False)),
                            ("results.csv", lambda f, p: f.to_csv(p, index=False))):
            tmp = self.directory / f".{name}.{os.getpid()}.tmp"
            write(frame, tmp)
            os.replace(tmp, self.directory / name)
        return frame
