"""``python -m flowvar ...``: the same command line as the ``flowvar`` script."""

import sys

from flowvar.cli import main

if __name__ == "__main__":
    sys.exit(main())
