"""``python -m edge_client`` is ``antiphon-edge``."""

import sys

from edge_client.cli import main

sys.exit(main())
