"""``python -m clustersim.cli``: the same as the ``clustersim`` command."""

import sys

from clustersim.cli.main import main

sys.exit(main())
