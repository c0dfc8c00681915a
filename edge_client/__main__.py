"""``python -m edge_client`` is ``antiphon-edge``."""

import sys

from edge_client.start import main

sys.exit(main())
