"""`python -m tapveth` runs the command-line interface."""

from tapveth.cli.main import main

raise SystemExit(main())
