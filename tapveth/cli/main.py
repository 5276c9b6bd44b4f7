"""The `tapveth` command: argument parsing, talking to the daemon, printing the answers.

Each command is one `_cmd_*` function that adds its subparser and sets `run=` to the function
that carries it out; COMMANDS lists them in the order `--help` shows them. Adding a command is
one such function and one entry in COMMANDS. Before argparse sees the line, `prepare()` gives it
iproute2's habits: unambiguous abbreviations of commands, `help` after any command, and `-j`/`-p`
anywhere.
"""

import argparse
import importlib.util
import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tapveth import __version__, control
from tapveth.cli import journal, render
from tapveth.control import ControlError
from tapveth.core.config import ConfigError
from tapveth.core.linkspec import SpecError, parse_add, parse_select

EXIT_USER = 2
# Measured with tapveth bench (2 vCPUs): a 1 ms window after each frame raised TCP 1-byte
# request/response from 0.74x to 1.52x the kernel veth, and costs at most 1 ms of polling
# after a burst (0% CPU when idle). 20 ms also brings ping -i 0.01 from 122 to 56 us p50 and
# p99 from 309 to 87 us, but then a trickle of traffic keeps a whole core busy.
DEFAULT_BUSY_POLL_US = 1000

DESCRIPTION = """\
tapveth: the Linux veth pair, rebuilt in userspace on two TAP devices.

A daemon owns the pairs and relays frames between the two ends with veth semantics (carrier
coupling, MTU checks, counters). Replace `ip link add A type veth peer name B` with
`tapveth add A peer name B`; every other step (ip link set … netns, ip addr, ping) is plain
iproute2.
"""

EPILOG = """\
in short:
  daemon                     run the daemon in the foreground (as root)
  add NAME [netns NS] [mtu N] [address MAC] [txqueuelen N] [up] [type veth]
      peer [name] PEER [netns NS] [mtu N] [address MAC] [txqueuelen N] [up]
                             create a pair (the grammar of ip link add … type veth)
  add NAME [netns NS] [mtu N] [address MAC]
      peer vxlan id VNI remote ADDR [local ADDR] [dstport PORT] [srcport MIN MAX]
      [underlay-netns NS] [bfd] [bfd-interval MS] [bfd-multiplier N]
                             a pair whose peer is across a VXLAN tunnel (see README)
  del NAME [netns NS]        delete the pair that NAME is an end of
  show [NAME] [netns NS]     list pairs: ends, namespace, admin state, carrier, MTU
  stats [NAME] [netns NS]    counters in veth's meaning, with drops by reason
  daemon --config FILE       own the pairs a TOML file describes (see tapveth(8))
  daemon --check-config FILE check a configuration file and exit (2 if it has an error)
  reload                     apply the daemon's configuration file again (as SIGHUP)
  capture NAME [netns NS] [-w FILE] [-c N] [-s SNAPLEN] [--drops]
                             both directions of NAME's pair, as pcapng (-w) or one line a
                             frame; refused frames carry their drop reason
  monitor [-j] [-t]          pair events (created, deleted, moved, carrier, mtu) as they come
  demo                       run the classic two-namespace veth experiment end to end
  qdisc {add|change|replace|del} dev NAME root netem OPTIONS
                             impair the frames NAME sends (tc-netem's grammar)
  [-s] qdisc show [dev NAME] the impairments, with counters as tc -s
  link set dev NAME carrier on|off
                             cut the pair's carrier (both ends NO-CARRIER) and restore it
  link set dev NAME flap every T for D [count N]
  fault {add|replace|del|show} dev NAME SCHEDULE
                             fault schedules: flaps, timelines (at +10s netem loss 5% ...)
  bench [--quick] [--peers] [--json FILE] [--plot FILE.png]
                             measure tapveth and the kernel veth side by side
  compare [--only GROUP] [-j] [--report FILE.md|FILE.html]
                             run veth's behaviours on both and show how they differ

As with ip, a command may be abbreviated while it stays unambiguous (tapveth sh, tapveth a),
`help` after a command explains it (tapveth add help), and -j (JSON), -p (pretty) and -n NS
(as ip -n) go before or after the command.

examples:
  tapveth daemon &
  ip netns add ns1; ip netns add ns2
  tapveth add veth1 peer name veth2
  ip link set veth1 netns ns1; ip link set veth2 netns ns2
  tapveth -j -p show

The control socket is /run/tapveth/tapveth.sock unless --socket or $TAPVETH_SOCKET says
otherwise. Errors print one line on stderr and exit with status 2. See tapveth(8).
"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(message)


@dataclass(frozen=True, slots=True)
class Output:
    """How results are printed: -j (JSON) and -p (pretty, with -j)."""

    json: bool = False
    pretty: bool = False

    def emit(self, data: Any, text: Callable[[Any], str] | None = None) -> None:
        if self.json:
            print(render.as_json(data, pretty=self.pretty))
        elif text is not None:
            print(text(data))


Run = Callable[[argparse.Namespace, Output], int]


def _file(action: argparse.Action) -> None:
    """Tells the bash completion (doc/build.py, shtab) that this option takes a file name."""
    action.complete = {"bash": "_shtab_compgen_files"}  # type: ignore[attr-defined]


# -- the commands --------------------------------------------------------------------------


def _cmd_daemon(sub: Any) -> None:
    d = sub.add_parser(
        "daemon",
        help="run the daemon in the foreground",
        description="Run the daemon in the foreground (root, /dev/net/tun). SIGTERM or SIGINT "
        "removes its pairs (persistent ones stay) and exits 0; SIGHUP applies --config again.",
    )
    d.add_argument(
        "--group",
        metavar="NAME",
        help="members of this group may control the daemon too (socket mode 0660)",
    )
    _file(
        d.add_argument(
            "--config",
            metavar="FILE",
            help="own the pairs this TOML file describes; SIGHUP or 'tapveth reload' "
            "applies changes to it",
        )
    )
    _file(
        d.add_argument(
            "--check-config",
            metavar="FILE",
            help="only check FILE (syntax, keys, values) and exit: 0 if it is valid, 2 with "
            "FILE:LINE: what is wrong otherwise",
        )
    )
    d.add_argument(
        "--metrics",
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics over HTTP on this address (e.g. 127.0.0.1:9477; a bare "
        "port is on 127.0.0.1; overrides [metrics] listen of --config); without it the daemon "
        "opens no TCP socket",
    )
    d.add_argument(
        "--busy-poll",
        type=int,
        default=DEFAULT_BUSY_POLL_US,
        metavar="USEC",
        help="after traffic, poll instead of sleeping for this long: lower latency for up to "
        "a core of CPU while traffic flows; 0 disables (default: %(default)s)",
    )
    d.add_argument(
        "--busy-poll-gap",
        type=int,
        default=0,
        metavar="USEC",
        help="low-latency mode: while frames keep coming at most USEC apart, poll through the "
        "gaps between them, so that none waits for a wake-up (e.g. 20000 for ping -i 0.01); "
        "costs a core of CPU while such traffic flows, none when idle; 0 disables (default)",
    )
    d.add_argument(
        "--fast-path",
        choices=["native", "python"],
        default=os.environ.get("TAPVETH_FAST_PATH") or "native",
        help="who relays what an end sends while it has no impairment, capture or cut: "
        "native, a thread in C with no Python between a frame's arrival and its delivery "
        "(lower latency), or python, the event loop (default: native, or "
        "$TAPVETH_FAST_PATH)",
    )
    d.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default: info",
    )
    d.set_defaults(run=_run_daemon)


def _run_daemon(opts: argparse.Namespace, out: Output) -> int:
    if opts.check_config is not None:
        from tapveth.core import config

        cfg = config.load(opts.check_config)  # ConfigError: FILE:LINE, exit 2
        out.emit(
            {"file": opts.check_config, "pairs": len(cfg.pairs)},
            lambda d: f"{d['file']}: valid, {d['pairs']} pair(s)",
        )
        return 0
    if out.json:
        raise UsageError("-j: the daemon logs for people; use it with --check-config")
    if opts.busy_poll < 0 or opts.busy_poll_gap < 0:
        raise UsageError("--busy-poll and --busy-poll-gap take microseconds, 0 or more")
    if opts.fast_path not in ("native", "python"):  # a default from the environment
        raise UsageError(f"TAPVETH_FAST_PATH={opts.fast_path}: use native or python")
    return run_daemon(
        control.socket_path(opts.socket),
        opts.log_level,
        opts.busy_poll,
        opts.config,
        opts.group,
        opts.metrics,
        opts.busy_poll_gap,
        opts.fast_path == "native",
    )


def _cmd_add(sub: Any) -> None:
    a = sub.add_parser(
        "add",
        help="create a pair",
        usage="tapveth add [dev] NAME [netns NS] [mtu N] [address MAC] [txqueuelen N] [up] "
        "[type veth]\n"
        "                   peer [name] PEER [netns NS] [mtu N] [address MAC] [txqueuelen N] "
        "[up]\n"
        "       tapveth add NAME [netns NS] [mtu N] [address MAC] "
        "peer vxlan id VNI remote ADDR [local ADDR] [dstport PORT] [srcport MIN MAX] "
        "[underlay-netns NS] [bfd] [bfd-interval MS] [bfd-multiplier N]",
        description="Create a pair with the grammar of `ip link add … type veth peer …`. "
        "Without netns, an end is made in the namespace of the process that runs tapveth "
        "(or in -n NS), as the kernel does. `up` sets an end admin-up at once. With "
        "`peer vxlan …`, the peer is the far end of a VXLAN tunnel, in the words of "
        "`ip link add … type vxlan`.",
    )
    a.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a.set_defaults(run=_run_add)


def _run_add(opts: argparse.Namespace, out: Output) -> int:
    spec = parse_add(opts.words, default_netns=opts.netns)
    result = control.request(_path(opts), "add", {"spec": spec.to_dict()})
    if isinstance(result, dict):  # a daemon with a configuration file adds a note
        print(f"tapveth: note: {result['note']}", file=sys.stderr)
        result = result["ends"]
    out.emit(result)
    return 0


def _cmd_del(sub: Any) -> None:
    x = sub.add_parser(
        "del",
        aliases=["delete"],
        help="delete a pair",
        usage="tapveth del [dev] NAME [netns NS]",
        description="Delete the pair that NAME is an end of (either end's name works); both "
        "ends are gone when the command returns. This also removes a persistent pair left "
        "from a configuration that no longer has it.",
    )
    x.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    x.set_defaults(run=_run_del)


def _run_del(opts: argparse.Namespace, out: Output) -> int:
    sel = parse_select(opts.words, required=True, default_netns=opts.netns)
    out.emit(control.request(_path(opts), "del", sel.to_dict()))
    return 0


def _cmd_show(sub: Any) -> None:
    for name, helptext, run in (
        ("show", "list pairs, one line an end", _run_show),
        ("stats", "counters in veth's meaning, as ip -s link", _run_stats),
    ):
        x = sub.add_parser(
            name,
            help=helptext,
            usage=f"tapveth {name} [[dev] NAME] [netns NS]",
            description=f"{helptext[0].upper()}{helptext[1:]}. With NAME, both ends of the "
            "pair that NAME is an end of; with netns NS alone, the ends in namespace NS.",
        )
        x.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        x.set_defaults(run=run)


def _select(opts: argparse.Namespace, op: str) -> list[dict[str, Any]]:
    sel = parse_select(opts.words, required=False, default_netns=opts.netns)
    ends: list[dict[str, Any]] = control.request(_path(opts), op, sel.to_dict())
    return [e for e in ends if sel.keeps(e)]


def _run_show(opts: argparse.Namespace, out: Output) -> int:
    out.emit(_select(opts, "show"), render.show_table)
    return 0


def _run_stats(opts: argparse.Namespace, out: Output) -> int:
    out.emit(_select(opts, "stats"), render.stats_text)
    return 0


def _cmd_reload(sub: Any) -> None:
    x = sub.add_parser(
        "reload",
        help="make the daemon apply its configuration file again",
        description="Make a daemon started with --config apply its file again (as SIGHUP) and "
        "print what changed. A file with an error is refused: exit 2, nothing changes.",
    )
    x.set_defaults(run=_run_reload)


def _run_reload(opts: argparse.Namespace, out: Output) -> int:
    out.emit(
        {"changes": control.request(_path(opts), "reload", {}, timeout=120)},
        lambda d: str(d["changes"]),
    )
    return 0


def _cmd_demo(sub: Any) -> None:
    x = sub.add_parser(
        "demo",
        help="run the two-namespace experiment, self-contained",
        description="The classic experiment with namespaces, names and a daemon of its own, "
        "all removed at the end; exit status 0 when the ping had no loss.",
    )
    x.set_defaults(run=_run_demo)


def _run_demo(opts: argparse.Namespace, out: Output) -> int:
    if out.json:
        raise UsageError("-j: the demo prints for people")
    from tapveth.cli.demo import run_demo

    return run_demo()


def _cmd_bench(sub: Any) -> None:
    b = sub.add_parser(
        "bench",
        help="measure tapveth against the kernel veth, side by side",
        description="Build a kernel veth pair and a tapveth pair, each in namespaces of its "
        "own, measure both in the same run and print each figure with its ratio.",
    )
    b.add_argument(
        "--quick", action="store_true", help="short run (under a minute) to check it works"
    )
    b.add_argument(
        "--peers",
        action="store_true",
        help="also measure vde_switch and socat TUN<->TUN when installed",
    )
    _file(
        b.add_argument("--json", dest="json_file", metavar="FILE", help="write the figures as JSON")
    )
    _file(b.add_argument("--plot", metavar="FILE.png", help="draw the ratios (needs matplotlib)"))
    b.add_argument(
        "--pairs",
        type=int,
        metavar="N",
        help="scale run instead: N pairs at once against N kernel veth pairs, with the "
        "kernel's share of the set-up (the namespace moves) measured apart",
    )
    b.add_argument(
        "--busy-poll",
        type=int,
        default=None,
        metavar="USEC",
        help="run tapveth's daemon with this --busy-poll",
    )
    b.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="'DAEMON OPTIONS'",
        help="also measure a tapveth daemon run with these options (e.g. '--busy-poll-gap "
        "20000'), as one more subject of the same rounds; may be repeated",
    )
    b.add_argument(
        "--vxlan",
        action="store_true",
        help="measure a pair stretched over VXLAN against the kernel's vxlan instead",
    )
    b.add_argument(
        "--designs",
        action="store_true",
        help="instead: relay designs (bare prototypes, CPU placement) beside the kernel veth, "
        "the daemon and vde_switch",
    )
    b.add_argument(
        "--impair",
        action="store_true",
        help="instead: how closely a receiver sees the netem settings asked for",
    )
    b.add_argument(
        "--rows",
        metavar="GROUP,...",
        help="with --impair: only these groups of rows, of delay, jitter, frames, rate, "
        "longfat, carrier (default: all; the full run takes 20 to 25 minutes)",
    )
    b.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="N",
        help="measure every subject N times, interleaved, and report medians with their "
        "spread (default: 3, or 1 with --quick)",
    )
    b.set_defaults(run=_run_bench)


def _run_bench(opts: argparse.Namespace, out: Output) -> int:
    if out.json:
        raise UsageError("-j: bench writes its figures with --json FILE")
    if opts.plot is not None:
        # Checked before a minute of measuring, not after it.
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'tapveth[plot]'")
        if not os.access(os.path.dirname(os.path.abspath(opts.plot)), os.W_OK):
            raise UsageError(f"--plot: cannot write into the directory of {opts.plot}")
    if opts.variant and (opts.impair or opts.vxlan or opts.designs or opts.pairs is not None):
        raise UsageError(
            "--variant: only with the side-by-side run (not --impair, --vxlan, --designs, --pairs)"
        )
    if opts.designs and (opts.impair or opts.vxlan or opts.pairs is not None or opts.plot):
        raise UsageError(
            "--designs: a run of its own (not with --impair, --vxlan, --pairs, --plot)"
        )
    if opts.rows is not None and not opts.impair:
        raise UsageError("--rows: only with --impair")
    from tapveth.bench.sidebyside import run_bench

    extra = () if opts.busy_poll is None else ("--busy-poll", str(opts.busy_poll))
    if opts.impair:
        from tapveth.bench.impair import ROWS, run_impair_bench

        rows = ROWS
        if opts.rows is not None:
            rows = tuple(w.strip() for w in opts.rows.split(",") if w.strip())
            wrong = [w for w in rows if w not in ROWS]
            if wrong or not rows:
                raise UsageError(
                    f"--rows: {', '.join(wrong) or 'none given'}: not among {', '.join(ROWS)}"
                )
        return run_impair_bench(opts.quick, opts.json_file, opts.plot, rows=rows)
    if opts.designs:
        from tapveth.bench.designs import run_designs

        return run_designs(opts.quick, opts.json_file, opts.rounds)
    if opts.vxlan:
        from tapveth.bench.vxlan import run_vxlan_bench

        return run_vxlan_bench(opts.quick, opts.json_file, extra)
    if opts.pairs is not None:
        from tapveth.bench.sidebyside import run_scale

        return run_scale(opts.pairs, opts.quick, opts.json_file)
    variants = tuple(tuple(v.split()) for v in opts.variant)
    return run_bench(
        opts.quick, opts.peers, opts.json_file, opts.plot, extra, opts.rounds, variants
    )


def _cmd_qdisc(sub: Any) -> None:
    from tapveth.cli import qdisc

    q = sub.add_parser(
        "qdisc",
        help="netem impairments of the frames an end sends (the grammar of tc qdisc … netem)",
        usage=qdisc.USAGE,
        description=qdisc.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("words", nargs=argparse.REMAINDER)
    q.set_defaults(run=_run_qdisc)


def _run_qdisc(opts: argparse.Namespace, out: Output) -> int:
    from tapveth.cli import qdisc

    args = qdisc.request_args(opts.words)
    if opts.netns is not None and args.get("netns") is None:
        args["netns"] = opts.netns
    result = control.request(_path(opts), "qdisc", args)
    if args["action"] == "show":
        out.emit(result, lambda r: qdisc.show_text(r, opts.stats))
    return 0


def _cmd_link(sub: Any) -> None:
    from tapveth.cli import fault

    x = sub.add_parser(
        "link",
        help="faults: cut a pair's carrier and restore it, or flap it",
        usage=fault.USAGE,
        description=fault.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    x.add_argument("words", nargs=argparse.REMAINDER)
    x.set_defaults(run=_run_link)


def _run_link(opts: argparse.Namespace, out: Output) -> int:
    from tapveth.cli import fault

    args = fault.request_args(opts.words)
    if opts.netns is not None and args.get("netns") is None:
        args["netns"] = opts.netns
    control.request(_path(opts), "fault" if "schedule" in args else "carrier", args)
    return 0


def _cmd_fault(sub: Any) -> None:
    from tapveth.cli import fault

    x = sub.add_parser(
        "fault",
        help="fault schedules: carrier flaps and timelines of cuts and impairments",
        usage=fault.FAULT_USAGE,
        description=fault.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    x.add_argument("words", nargs=argparse.REMAINDER)
    x.set_defaults(run=_run_fault)


def _run_fault(opts: argparse.Namespace, out: Output) -> int:
    from tapveth.cli import fault

    args = fault.fault_args(opts.words)
    if opts.netns is not None and args.get("netns") is None:
        args["netns"] = opts.netns
    result = control.request(_path(opts), "fault", args)
    if args["action"] == "show":
        out.emit(result, fault.show_text)
    return 0


def _cmd_compare(sub: Any) -> None:
    c = sub.add_parser(
        "compare",
        help="run veth's behaviours on the kernel veth and tapveth and compare them",
        description="Run each behaviour of the conformance suite on a kernel veth pair and on "
        "a tapveth pair (private daemon, namespaces of its own, all removed at the end) and "
        "print what each did. Exit status 0 when every behaviour agrees or differs as README "
        "documents, 1 otherwise. -j (before or after the command) prints JSON.",
    )
    c.add_argument(
        "--only",
        metavar="GROUP",
        help="only this group of behaviours (carrier, frames, lifecycle...; a wrong name "
        "lists them all), or one behaviour as GROUP/NAME",
    )
    _file(
        c.add_argument("--report", metavar="FILE.md|FILE.html", help="also write a shareable page")
    )
    c.set_defaults(run=_run_compare)


def _run_compare(opts: argparse.Namespace, out: Output) -> int:
    from tapveth.conformance.compare import run_compare

    return run_compare(opts.only, out.json, opts.report)


def _cmd_capture(sub: Any) -> None:
    c = sub.add_parser(
        "capture",
        help="capture the frames of a pair, with drop reasons",
        usage="tapveth capture NAME [netns NS] [-w FILE] [-c N] [-s SNAPLEN] [--drops] [-B KIB]",
        description="Capture both directions of NAME's pair until Ctrl-C, as tcpdump would on "
        "both ends at once. Each frame is recorded on the end that sent it (outbound), when the "
        "relay delivered or refused it; a refused frame carries 'dropped: REASON' as its "
        "pcapng comment. Needs the same rights as controlling the daemon.",
    )
    c.add_argument("words", nargs="*", metavar="NAME [netns NS]")
    _file(
        c.add_argument(
            "-w", dest="write", metavar="FILE", help="write pcapng to FILE ('-': standard output)"
        )
    )
    c.add_argument("-c", dest="count", type=int, default=0, metavar="N", help="stop after N frames")
    c.add_argument(
        "-s",
        dest="snaplen",
        type=int,
        default=0,
        metavar="SNAPLEN",
        help="keep at most SNAPLEN bytes of each frame (0: 262144, as tcpdump)",
    )
    c.add_argument("--drops", action="store_true", help="only frames the relay refused")
    c.add_argument(
        "-B",
        dest="buffer_kib",
        type=int,
        default=2048,
        metavar="KIB",
        help="frames waiting for this capture before new ones are left out (default: "
        "%(default)s KiB)",
    )
    c.set_defaults(run=_run_capture)


def _run_capture(opts: argparse.Namespace, out: Output) -> int:
    from tapveth.cli.capture import run_capture

    if opts.count < 0:
        raise UsageError("-c takes a number of frames, 0 or more")
    if not 0 <= opts.snaplen <= 262144:
        raise UsageError("-s takes a snapshot length from 0 (the default, 262144) to 262144")
    if not 1 <= opts.buffer_kib <= 262144:
        raise UsageError("-B takes a buffer size from 1 to 262144 KiB")
    target = parse_select(opts.words, required=True, default_netns=opts.netns).to_dict()
    return run_capture(
        _path(opts), target, opts.write, opts.count, opts.snaplen, opts.drops, opts.buffer_kib
    )


def _cmd_monitor(sub: Any) -> None:
    m = sub.add_parser(
        "monitor",
        help="print pair events as they happen (as ip monitor)",
        description="Print pair events (created, deleted, moved, renamed, carrier, mtu) as they "
        "happen, until Ctrl-C; with -j, one JSON object a line.",
    )
    m.add_argument("-t", "--timestamp", action="store_true", help="prefix each line with the time")
    m.set_defaults(run=_run_monitor)


def _run_monitor(opts: argparse.Namespace, out: Output) -> int:
    from tapveth.cli.monitor import run_monitor

    return run_monitor(_path(opts), out.json, opts.timestamp)


COMMANDS: tuple[Callable[[Any], None], ...] = (
    _cmd_daemon,
    _cmd_add,
    _cmd_del,
    _cmd_show,
    _cmd_qdisc,
    _cmd_link,
    _cmd_fault,
    _cmd_capture,
    _cmd_monitor,
    _cmd_reload,
    _cmd_demo,
    _cmd_bench,
    _cmd_compare,
)


# -- the parser and iproute2's habits ------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tapveth",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--socket",
        metavar="PATH",
        help=f"control socket (default: $TAPVETH_SOCKET, else {control.DEFAULT_SOCKET})",
        default=None,
    )
    p.add_argument("-j", "--json", action="store_true", help="JSON output, as ip -j")
    p.add_argument("-p", "--pretty", action="store_true", help="indented JSON, as ip -j -p")
    p.add_argument("-s", "--stats", action="store_true", help="with qdisc show: counters, as tc -s")
    p.add_argument(
        "-n",
        "--netns",
        metavar="NS",
        help="as ip -n: add makes ends without netns in NS; del, show and stats mean NS",
    ).complete = {"bash": "_tapveth_netns"}  # type: ignore[attr-defined]
    p.add_argument("-V", "--version", action="version", version=f"tapveth {__version__}")
    sub = p.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", parser_class=_Parser
    )
    for command in COMMANDS:
        command(sub)
    return p


# Words that set output options wherever they stand (ip takes them before the object only,
# but `tapveth show -j` has always worked). Not for commands with a --json FILE of their own.
_OUTPUT_FLAGS = {"-j": "json", "--json": "json", "-p": "pretty", "--pretty": "pretty"}
_TAKES_VALUE = {"--socket", "-n", "--netns"}


@dataclass(slots=True)
class Prepared:
    argv: list[str]
    json: bool = False
    pretty: bool = False
    help_for: str | None = None  # `tapveth COMMAND help`: that command's help
    main_help: bool = False  # `tapveth help`


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def expand_command(word: str, commands: dict[str, argparse.ArgumentParser]) -> str:
    """A command word as iproute2 reads it: exact, else the one command it is a prefix of."""
    if word in commands or word == "help":
        return word
    hits: dict[int, str] = {}  # aliases (del, delete) are one command
    for name, sp in commands.items():
        if name.startswith(word):
            hits.setdefault(id(sp), name)
    if "help".startswith(word):
        hits[0] = "help"
    if len(hits) == 1:
        return next(iter(hits.values()))
    if len(hits) > 1:
        raise UsageError(f"'{word}' is ambiguous: {', '.join(sorted(hits.values()))}")
    return word  # argparse says it is not a command


def prepare(argv: list[str], parser: argparse.ArgumentParser) -> Prepared:
    """iproute2's habits, before argparse: abbreviated commands, `help` after a command, and
    -j/-p after the command too."""
    commands = _commands(parser)
    out = Prepared([])
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        out.argv.append(argv[i])
        if argv[i] in _TAKES_VALUE and i + 1 < len(argv):
            out.argv.append(argv[i + 1])
            i += 1
        i += 1
    if i == len(argv):
        return out
    command = expand_command(argv[i], commands)
    rest = argv[i + 1 :]
    if command == "help":
        if rest:
            out.help_for = expand_command(rest[0], commands)
        else:
            out.main_help = True
        return out
    if rest and (rest[0] == "help" or rest[-1] == "help"):
        out.help_for = command
        return out
    own_json = command == "bench"  # bench --json FILE
    kept = []
    for w in rest:
        flag = _OUTPUT_FLAGS.get(w)
        if flag is not None and not (own_json and w == "--json"):
            setattr(out, flag, True)
        else:
            kept.append(w)
    out.argv += [command, *kept]
    return out


# Commands that run here rather than ask a daemon: their errors are not a daemon's answers.
_LOCAL_COMMANDS = frozenset({"daemon", "demo", "bench", "compare", "capture", "monitor"})


def _path(opts: argparse.Namespace) -> str:
    return control.socket_path(opts.socket)


def main(argv: list[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # An interface name may hold bytes that are not UTF-8: write them as `ip link` does.
        sys.stdout.reconfigure(errors="surrogateescape")
    parser = build_parser()
    try:
        prepared = prepare(sys.argv[1:] if argv is None else argv, parser)
        if prepared.main_help:
            parser.print_help()
            return 0
        if prepared.help_for is not None:
            commands = _commands(parser)
            if prepared.help_for not in commands:
                raise UsageError(f"no command {prepared.help_for!r}")
            commands[prepared.help_for].print_help()
            return 0
        opts = parser.parse_args(prepared.argv)
        if opts.command is None:
            parser.print_help()
            return EXIT_USER
        out = Output(opts.json or prepared.json, opts.pretty or prepared.pretty)
        run: Run = opts.run
        if opts.command in _LOCAL_COMMANDS:
            return run(opts, out)
        try:
            return run(opts, out)
        except (SpecError, ControlError, ConfigError, UsageError):
            raise
        except (KeyError, TypeError, AttributeError, ValueError, IndexError):
            # A reply that is JSON but not of the shape this version prints: another program
            # on the socket, or a daemon of another version.
            raise ControlError(
                f"the daemon on {_path(opts)} answered in a form this tapveth does not know "
                "(is it the same version?)"
            ) from None
    except UsageError as exc:
        journal.error_line(f"tapveth: {exc} (see tapveth help)")
        return EXIT_USER
    except (SpecError, ControlError, ConfigError) as exc:
        journal.error_line(f"tapveth: {exc}")
        return EXIT_USER
    except KeyboardInterrupt:
        return 130


# -- the daemon ----------------------------------------------------------------------------


def run_daemon(
    path: str,
    log_level: str,
    busy_poll_us: int = DEFAULT_BUSY_POLL_US,
    config_path: str | None = None,
    group: str | None = None,
    metrics: str | None = None,
    busy_poll_gap_us: int = 0,
    native: bool = False,
) -> int:
    if metrics is not None:
        from tapveth.core.address import AddressError, parse_listen

        try:
            parse_listen(metrics)
        except AddressError as exc:
            raise ControlError(f"--metrics: {exc}") from None
    if os.geteuid() != 0:
        raise ControlError("the daemon needs root (CAP_NET_ADMIN) to make TAP devices")
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        raise ControlError("/dev/net/tun is missing or not accessible (modprobe tun)")
    if config_path is not None:
        from tapveth.core import config

        cfg = config.load(config_path)  # a bad file: one line on stderr, exit 2, nothing made
        metrics = metrics or cfg.metrics
    import asyncio  # the daemon's only: other commands start faster without it

    import uvloop

    from tapveth.daemon.service import Daemon

    journal.setup(log_level)

    async def amain() -> int:
        try:
            daemon = Daemon(
                path, busy_poll_us, config_path, group, metrics, busy_poll_gap_us, native
            )
        except PermissionError as exc:
            raise ControlError(f"cannot start: {exc}") from None
        return await daemon.run()

    # A loop factory, not uvloop.install(): the loop is the main thread's only.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(amain())
