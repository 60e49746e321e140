"""`python -m introspect.cli`: the `introspect` command."""

import sys

from introspect.cli import main

sys.exit(main())
