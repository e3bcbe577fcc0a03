"""Packaging hook (the rest is in pyproject.toml): a wheel carries the topology presets.

The presets live in ``topologies/`` beside the package, where a source checkout reads them;
``clustersim.topology.presets.topology_dirs`` looks for the installed copy in
``clustersim/topologies``, which this build step writes.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PRESETS = Path(__file__).resolve().parent / "topologies"


class BuildPyWithPresets(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads topologies/ in place
            return
        target = Path(self.build_lib) / "clustersim" / "topologies"
        target.mkdir(parents=True, exist_ok=True)
        for preset in sorted(PRESETS.glob("*.yaml")):
            shutil.copy2(preset, target / preset.name)


setup(cmdclass={"build_py": BuildPyWithPresets})
