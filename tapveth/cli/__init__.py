"""The `tapveth` command: parsing, talking to the daemon, printing, and the demo."""
