"""``python -m fedledger``: the command line."""

import sys

from fedledger.cli import main

sys.exit(main())
