"""``python -m hcjax.cli``: the ``hcjax`` command."""

import sys

from hcjax.cli import main

sys.exit(main())
