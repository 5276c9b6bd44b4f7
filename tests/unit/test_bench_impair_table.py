"""How `bench --impair` shows a row: met, missed, or out of the relay's reach."""

import pytest

from tapveth.bench import impair
from tapveth.bench.impair import Row, _abs_sent_s, table


def _last_column(text: str) -> list[str]:
    return [line.split(" | ")[-1].strip() for line in text.splitlines()[1:]]


def test_table_says_yes_no_or_why_the_target_is_beyond_reach() -> None:
    met = Row("rate 1gbit (UDP)", "iperf3 UDP goodput", "x")
    met.cells["tapveth"], met.met["tapveth"] = "ok", True
    missed = Row("rate 10gbit (TCP)", "iperf3 TCP goodput", "x")
    missed.cells["tapveth"], missed.met["tapveth"] = "low", False
    far = Row("rate 10gbit (UDP)", "iperf3 UDP goodput", "x")
    far.cells["tapveth"], far.met["tapveth"] = "low", False
    far.beyond["tapveth"] = "beyond reach: 1952 Mbit/s with no setting"
    other = Row("rate 10gbit (UDP)", "iperf3 UDP goodput", "x")
    other.met["tapveth"] = False
    other.beyond["wirefilter"] = "beyond reach: 90 Mbit/s with no setting"
    assert _last_column(table([met, missed, far, other])) == [
        "yes",
        "no",
        "beyond reach: 1952 Mbit/s with no setting",
        "no",  # only tapveth's own reach speaks for the met column
    ]


def test_table_fills_missing_cells_with_a_dash() -> None:
    row = Row("carrier off/on", "events", "1 ms")
    row.cells["tapveth"], row.met["tapveth"] = "gap 10 us", True
    head, body = table([row]).splitlines()
    assert "wirefilter" in head and "tbf" in head
    assert body.split(" | ")[4].strip() == "-"


def test_absolute_send_times_put_two_probes_on_one_clock() -> None:
    a = {"t0_ns": 5_000_000_000, "sent_us": [0.0, 25_000.0]}
    b = {"t0_ns": 5_010_000_000, "sent_us": [0.0]}
    assert _abs_sent_s(a) == [5.0, 5.025]
    assert _abs_sent_s(b) == [5.01]


def test_receiver_socket_drops_are_read_from_the_namespace_snmp_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snmp = (
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "Udp: 537532 0 51695 1 51695 0\n"
        "UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "UdpLite: 0 0 0 0 7 0\n"
    )
    seen: list[tuple[str, ...]] = []

    def fake(ns: str, *cmd: str, **_: object) -> str:
        seen.append((ns, *cmd))
        return snmp

    monkeypatch.setattr(impair, "in_ns", fake)
    assert impair._udp_rcvbuf_errors("nsb") == 51695
    assert seen == [("nsb", "cat", "/proc/net/snmp")]
