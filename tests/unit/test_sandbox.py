"""The one line that explains a socket family refused by the unit's sandbox, and names its fix."""

import errno

import pytest

from tapveth.daemon import sandbox


def test_refused_is_eafnosupport_only() -> None:
    assert sandbox.refused(OSError(errno.EAFNOSUPPORT, "Address family not supported"))
    assert not sandbox.refused(OSError(errno.EADDRINUSE, "Address already in use"))


def test_under_a_unit_the_drop_in_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    line = sandbox.explain("metrics on 127.0.0.1:9477", "AF_INET")
    assert line.startswith("cannot open metrics on 127.0.0.1:9477: the unit refuses AF_INET")
    assert "RestrictAddressFamilies=AF_INET AF_INET6" in line and sandbox.DROP_IN in line
    assert "\n" not in line


def test_outside_a_unit_the_kernel_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    line = sandbox.explain("the tunnel's UDP sockets", "AF_INET6")
    want = "cannot open the tunnel's UDP sockets: this kernel has no AF_INET6 sockets"
    assert line == want + " (EAFNOSUPPORT)"
