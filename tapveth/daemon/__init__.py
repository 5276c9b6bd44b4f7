"""The daemon: the pairs it owns, how it follows their ends, its relay and its control requests."""
