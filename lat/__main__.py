"""`python -m lat` is the `lat` command."""

import sys

from lat.cli import main

sys.exit(main())
