"""`python -m tapveth` runs the command-line interface."""

from tapveth.cli import main

raise SystemExit(main())
