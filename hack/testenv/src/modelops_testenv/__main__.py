"""``python -m modelops_testenv``: a control plane in the foreground until Ctrl-C."""

import sys

from .cli import main

sys.exit(main())
