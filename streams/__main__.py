"""``python -m streams`` is the ``touchpoint`` command."""

import sys

from streams.cli import main

sys.exit(main())
