"""``python -m reports verify|merge|show``: see `reports.bundle.main`."""

import sys

from reports.bundle import main

sys.exit(main())
