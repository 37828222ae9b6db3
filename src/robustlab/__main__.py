"""``python -m robustlab``: the same as the ``robustlab`` command."""

import sys

from robustlab.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
