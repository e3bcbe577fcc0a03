"""Shared set-up: the fake run functions' folder on sys.path, and a small base experiment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# Workers (spawned processes, dask nannies) inherit sys.path, so they can import fake_runs by
# the same top-level name the tests pickle it under.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

BASE_YAML = """\
name: demo
description: Which tensor-parallel size trains fastest?
cluster:
  topology: dgx-h100
  devices: 16
  overrides:
    scale_up.bandwidth: 450 GB/s
model: llama3-8b
training:
  global_batch: 64
  parallelism: {tp: 8, pp: 1}
output:
  plots: false
"""


@pytest.fixture
def write_experiment(tmp_path):
    """Write BASE_YAML plus a sweep section (YAML text) to a file and return its path."""

    def write(sweep: str = "", base: str = BASE_YAML, name: str = "exp.yaml") -> Path:
        path = tmp_path / name
        path.write_text(base + sweep)
        return path

    return write
