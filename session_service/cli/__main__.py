"""``python -m session_service.cli``: the ``session-service`` command."""

import sys

from session_service.cli.main import main

sys.exit(main())
