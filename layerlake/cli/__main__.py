"""``python -m layerlake.cli`` runs the command line, like ``python -m layerlake``."""

import sys

from . import main

sys.exit(main())
