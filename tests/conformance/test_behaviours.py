"""Every behaviour of tapveth.conformance on both backends, with assertions.

Each behaviour's observation on the kernel veth must be what veth's semantics predict (its
registry entry's `expected`), and tapveth's must be the same, except for the facts README's
table of differences documents, which must have the documented value. Since both are held to
the same expectation, the kernel's observation equals tapveth's, or differs only as
documented: exactly what `tapveth compare` reports on this machine."""

import pytest

from tapveth.conformance.backends import Backend
from tapveth.conformance.behaviours import BEHAVIOURS
from tapveth.conformance.lab import Lab
from tapveth.conformance.registry import Behaviour, verdict

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("behaviour", BEHAVIOURS, ids=lambda b: b.key)
def test_behaviour(behaviour: Behaviour, lab: Lab, backend: Backend) -> None:
    # lab before backend: the daemon stops before the lab deletes the namespaces
    observed = behaviour.run(lab, backend)
    assert observed == behaviour.expected_for(backend.name)
    documented = backend.name != "veth" and behaviour.documented
    outcome = verdict(behaviour, behaviour.expected, observed).outcome
    assert outcome == ("documented" if documented else "agree")
