"""The pcapng encoder: exact bytes for the fixed layouts, a round trip through our reader, and
an independent reader (scapy's) agreeing on what was written."""

import io
import struct

import pytest

from tapveth.core import pcapng


def test_section_header_layout() -> None:
    shb = pcapng.section_header("tapveth 1")
    block_type, total, magic, major, minor, length = struct.unpack_from("<IIIHHq", shb)
    assert (block_type, magic, major, minor, length) == (0x0A0D0D0A, 0x1A2B3C4D, 1, 0, -1)
    assert total == len(shb) and total % 4 == 0
    assert struct.unpack_from("<I", shb, total - 4)[0] == total
    # shb_userappl "tapveth 1" (9 bytes, padded to 12), then opt_endofopt
    assert shb[24:40] == struct.pack("<HH", 4, 9) + b"tapveth 1\0\0\0"
    assert shb[40:44] == b"\0\0\0\0"


def test_interface_description_layout() -> None:
    idb = pcapng.interface_description("veth1", "netns ns1, mtu 1500", snaplen=96)
    block_type, total, linktype, reserved, snaplen = struct.unpack_from("<IIHHI", idb)
    assert (block_type, linktype, reserved, snaplen) == (1, 1, 0, 96)
    assert idb[16:28] == struct.pack("<HH", 2, 5) + b"veth1\0\0\0"
    assert struct.pack("<HH", 9, 1) + b"\x09\0\0\0" in idb  # if_tsresol: nanoseconds
    assert total == len(idb)


def test_packet_layout_with_padding_flags_and_comment() -> None:
    epb = pcapng.enhanced_packet(1, (7 << 32) + 9, b"\xaa" * 5, 60, pcapng.OUTBOUND, "mtu")
    head = struct.unpack_from("<IIIIIII", epb)
    assert head == (6, len(epb), 1, 7, 9, 5, 60)
    assert epb[28:36] == b"\xaa" * 5 + b"\0\0\0"  # data padded to 32 bits
    opts = epb[36:-4]
    assert opts == (
        struct.pack("<HH", 1, 3) + b"mtu\0" + struct.pack("<HHI", 2, 4, 2) + b"\0\0\0\0"
    )


def test_packet_without_options_has_no_option_list() -> None:
    epb = pcapng.enhanced_packet(0, 1, b"\x01\x02\x03\x04", 4)
    assert len(epb) == 32 + 4


def test_round_trip_through_the_reader_in_pieces() -> None:
    frames = [bytes(range(n % 256)) * 1 for n in (14, 60, 61, 62, 63, 1514)]
    stream = pcapng.section_header("t") + pcapng.interface_description("a", "end a")
    stream += pcapng.interface_description("b", "end b", snaplen=64)
    for i, f in enumerate(frames):
        flags = pcapng.OUTBOUND if i % 2 else pcapng.INBOUND
        comment = "dropped: mtu" if i == 3 else None
        stream += pcapng.enhanced_packet(i % 2, 10**18 + i, f[:64], len(f), flags, comment)
    stream += pcapng.interface_statistics(0, 10**18 + 99, 10**18, 7, 6, 2, 4)
    reader = pcapng.Reader()
    records: list[pcapng.Record] = []
    for i in range(0, len(stream), 7):  # arbitrary cuts, as a socket delivers them
        records += reader.feed(stream[i : i + 7])
    ifaces = [r for r in records if isinstance(r, pcapng.Interface)]
    packets = [r for r in records if isinstance(r, pcapng.Packet)]
    stats = [r for r in records if isinstance(r, pcapng.Statistics)]
    assert [i.name for i in ifaces] == ["a", "b"] and ifaces[1].snaplen == 64
    assert ifaces[0].tsresol == 9 and ifaces[0].description == "end a"
    assert [p.data for p in packets] == [f[:64] for f in frames]
    assert [p.orig_len for p in packets] == [len(f) for f in frames]
    assert [p.ts_ns for p in packets] == [10**18 + i for i in range(6)]
    assert [p.direction for p in packets] == [1, 2, 1, 2, 1, 2]
    assert [p.comment for p in packets] == [None, None, None, "dropped: mtu", None, None]
    assert len(stats) == 1
    assert (stats[0].received, stats[0].accepted, stats[0].dropped, stats[0].delivered) == (
        7,
        6,
        2,
        4,
    )
    assert stats[0].counters[pcapng.ISB_STARTTIME] == 10**18
    assert reader.packets_seen == 6

    counting = pcapng.Reader(packets=False)  # what the CLI uses to count a stream it passes on
    kinds = [type(r).__name__ for r in counting.feed(stream)]
    assert kinds == ["Interface", "Interface", "Statistics"]
    assert counting.packets_seen == 6


def test_reader_refuses_garbage() -> None:
    with pytest.raises(pcapng.PcapngError):
        pcapng.Reader().feed(pcapng.interface_description("a", "b"))  # no section header
    bad = bytearray(pcapng.section_header("t"))
    bad[-4:] = b"\xff\0\0\0"
    with pytest.raises(pcapng.PcapngError):
        pcapng.Reader().feed(bytes(bad))
    with pytest.raises(pcapng.PcapngError):
        pcapng.Reader().feed(pcapng.section_header("t") + pcapng.enhanced_packet(3, 0, b"", 0))


def test_scapy_reads_what_we_write() -> None:
    from scapy.utils import PcapNgReader

    frame = bytes.fromhex("ffffffffffff020000000001 0806".replace(" ", "")) + b"\0" * 46
    stream = (
        pcapng.section_header("t")
        + pcapng.interface_description("veth1", "x")
        + pcapng.interface_description("veth2", "y")
        + pcapng.enhanced_packet(1, 1_500_000_000_123_456_789, frame, 60, pcapng.OUTBOUND, "hi")
    )
    pkts = list(PcapNgReader(io.BytesIO(stream)))  # type: ignore[arg-type]  # takes files too
    assert len(pkts) == 1
    assert bytes(pkts[0]) == frame
    assert pkts[0].sniffed_on == "veth2"
    assert pkts[0].comment == b"hi"
    assert pkts[0].direction == pcapng.OUTBOUND
    assert abs(float(pkts[0].time) - 1_500_000_000.123456789) < 1e-6
