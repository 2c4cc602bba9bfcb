"""``python -m core.selfcheck``: run "check my setup" from the command line."""
import sys

from core.selfcheck.runner import main

sys.exit(main())
