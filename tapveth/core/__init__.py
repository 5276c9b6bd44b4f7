"""veth's rules and tapveth's grammars, without I/O: admission, carrier, counters, the `add`
grammar, the configuration file and what a reload changes. Unit-tested directly."""
