"""The kernel veth's behaviours, written once: run with assertions by the conformance tests
and as a side-by-side report by `tapveth compare`.

lab: namespaces and processes; endpoints: traffic run inside them; backends: the kernel veth
and tapveth; registry: behaviours, documented differences, verdicts; behaviours: the behaviours
and their registry; report: tables and pages; compare: the command."""
