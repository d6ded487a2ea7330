"""``python -m sisa.cli``: the ``sisa`` command."""

import sys

from . import main

sys.exit(main())
