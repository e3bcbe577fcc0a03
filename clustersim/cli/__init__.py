"""Command line: ``clustersim run | validate | topology | collective | presets``.

Exit codes: 0 done, 2 bad input (one clear message, no traceback), 1 anything else.
Subcommands import their heavy dependencies lazily so ``clustersim --help`` stays fast.
"""

from clustersim.cli.main import main

__all__ = ["main"]
