"""The `tapveth` command: argument parsing, talking to the daemon, printing the answers."""

import argparse
import asyncio
import io
import logging
import os
import sys
from typing import Any

from tapveth import __version__, control
from tapveth.cli import render
from tapveth.control import ControlError
from tapveth.core.config import ConfigError
from tapveth.core.linkspec import SpecError, check_name, check_netns, parse_add

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
commands:
  daemon                     run the daemon in the foreground (as root)
  add NAME [netns NS] [mtu N] [address MAC] [type veth]
      peer [name] PEER [netns NS] [mtu N] [address MAC]
                             create a pair (the grammar of ip link add … type veth)
  del NAME [netns NS]        delete the pair that NAME is an end of
  show [NAME] [-j]           list pairs: ends, namespace, admin state, carrier, MTU
  stats [NAME] [-j]          counters in veth's meaning, with drops by reason
  daemon --config FILE       own the pairs a TOML file describes (see README)
  reload                     apply the daemon's configuration file again (as SIGHUP)
  demo                       run the classic two-namespace veth experiment end to end
  bench [--quick] [--peers] [--json FILE] [--plot FILE.png]
                             measure tapveth and the kernel veth side by side

examples:
  tapveth daemon &
  ip netns add ns1; ip netns add ns2
  tapveth add veth1 peer name veth2
  ip link set veth1 netns ns1; ip link set veth2 netns ns2
  tapveth -j show

The control socket is /run/tapveth/tapveth.sock unless --socket or $TAPVETH_SOCKET says
otherwise. Errors print one line on stderr and exit with status 2.
"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tapveth",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--socket", metavar="PATH", help="control socket (default: %(default)s)", default=None
    )
    p.add_argument("-j", "--json", action="store_true", help="JSON output, as ip -j")
    p.add_argument("-V", "--version", action="version", version=f"tapveth {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("daemon", help="run the daemon in the foreground")
    d.add_argument(
        "--group",
        metavar="NAME",
        help="members of this group may control the daemon too (socket mode 0660)",
    )
    d.add_argument(
        "--config",
        metavar="FILE",
        help="own the pairs this TOML file describes; SIGHUP or 'tapveth reload' "
        "applies changes to it",
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
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default: info",
    )

    a = sub.add_parser(
        "add",
        help="create a pair",
        usage="tapveth add NAME [netns NS] [mtu N] [address MAC] "
        "peer [name] PEER [netns NS] [mtu N] [address MAC]",
    )
    a.add_argument("words", nargs=argparse.REMAINDER)

    for name in ("del", "delete"):
        x = sub.add_parser(name, help="delete a pair", usage=f"tapveth {name} NAME [netns NS]")
        x.add_argument("words", nargs=argparse.REMAINDER)
    for name, helptext in (("show", "list pairs"), ("stats", "show counters")):
        x = sub.add_parser(name, help=helptext, usage=f"tapveth {name} [NAME [netns NS]] [-j]")
        x.add_argument("-j", "--json", action="store_true", dest="sub_json")
        x.add_argument("words", nargs="*")

    sub.add_parser("demo", help="run the two-namespace experiment, self-contained")
    sub.add_parser("reload", help="make the daemon apply its configuration file again")

    b = sub.add_parser("bench", help="measure tapveth against the kernel veth, side by side")
    b.add_argument("--quick", action="store_true", help="short run (under 30 s) to check it works")
    b.add_argument(
        "--peers",
        action="store_true",
        help="also measure vde_switch and socat TUN<->TUN when installed",
    )
    b.add_argument("--json", dest="json_file", metavar="FILE", help="write the figures as JSON")
    b.add_argument("--plot", metavar="FILE.png", help="draw the ratios (needs matplotlib)")
    b.add_argument(
        "--pairs",
        type=int,
        metavar="N",
        help="scale run instead: N pairs at once against N kernel veth pairs",
    )
    b.add_argument(
        "--busy-poll",
        type=int,
        default=None,
        metavar="USEC",
        help="run tapveth's daemon with this --busy-poll",
    )
    b.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="N",
        help="measure every subject N times, interleaved, and report medians with their "
        "spread (default: 3, or 1 with --quick)",
    )
    return p


def _name_and_ns(words: list[str], required: bool) -> dict[str, Any]:
    """NAME [netns NS] (also `dev NAME`, as iproute2 accepts)."""
    args: dict[str, Any] = {}
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("netns", "dev") and i + 1 < len(words):
            key = "netns" if w == "netns" else "name"
            args[key] = check_netns(words[i + 1]) if key == "netns" else check_name(words[i + 1])
            i += 2
        elif w in ("netns", "dev"):
            raise SpecError(f"'{w}' needs a value")
        elif "name" not in args:
            args["name"] = check_name(w)
            i += 1
        else:
            raise SpecError(f"unknown word {w!r}")
    if required and "name" not in args:
        raise SpecError("which pair? give an end's name")
    return args


def main(argv: list[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # An interface name may hold bytes that are not UTF-8: write them as `ip link` does.
        sys.stdout.reconfigure(errors="surrogateescape")
    parser = build_parser()
    try:
        opts = parser.parse_args(argv)
        if opts.command is None:
            parser.print_help()
            return EXIT_USER
        return _run(opts)
    except UsageError as exc:
        print(f"tapveth: {exc} (see tapveth --help)", file=sys.stderr)
        return EXIT_USER
    except (SpecError, ControlError, ConfigError) as exc:
        print(f"tapveth: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        return 130


def _run(opts: argparse.Namespace) -> int:
    path = control.socket_path(opts.socket)
    if opts.command == "daemon":
        return run_daemon(path, opts.log_level, opts.busy_poll, opts.config, opts.group)
    if opts.command == "demo":
        from tapveth.cli.demo import run_demo

        return run_demo()
    if opts.command == "bench":
        from tapveth.bench.sidebyside import run_bench

        if opts.pairs is not None:
            from tapveth.bench.sidebyside import run_scale

            return run_scale(opts.pairs, opts.quick, opts.json_file)
        extra = () if opts.busy_poll is None else ("--busy-poll", str(opts.busy_poll))
        return run_bench(opts.quick, opts.peers, opts.json_file, opts.plot, extra, opts.rounds)
    try:
        return _client(opts, path)
    except (SpecError, ControlError, ConfigError):
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError):
        # A reply that is JSON but not of the shape this version prints: another program on
        # the socket, or a daemon of another version.
        raise ControlError(
            f"the daemon on {path} answered in a form this tapveth does not know "
            "(is it the same version?)"
        ) from None


def _client(opts: argparse.Namespace, path: str) -> int:
    """The commands that talk to a daemon."""
    want_json = opts.json or getattr(opts, "sub_json", False)
    if opts.command == "add":
        spec = parse_add(opts.words)
        result = control.request(path, "add", {"spec": spec.to_dict()})
        if isinstance(result, dict):  # a daemon with a configuration file adds a note
            print(f"tapveth: note: {result['note']}", file=sys.stderr)
            result = result["ends"]
        if want_json:
            print(render.as_json(result))
        return 0
    if opts.command == "reload":
        print(control.request(path, "reload", {}, timeout=120))
        return 0
    if opts.command in ("del", "delete"):
        control.request(path, "del", _name_and_ns(opts.words, required=True))
        return 0
    if opts.command in ("show", "stats"):
        result = control.request(path, opts.command, _name_and_ns(opts.words, required=False))
        if want_json:
            print(render.as_json(result))
        elif opts.command == "show":
            print(render.show_table(result))
        else:
            print(render.stats_text(result))
        return 0
    raise UsageError(f"unknown command {opts.command!r}")


def setup_logging(level: str) -> None:
    # Under systemd (JOURNAL_STREAM set) journald stamps each line itself.
    fmt = "%(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(message)s"
    logging.basicConfig(level=logging.WARNING, format=fmt, stream=sys.stderr)
    logging.getLogger("tapveth").setLevel(level.upper())


def run_daemon(
    path: str,
    log_level: str,
    busy_poll_us: int = DEFAULT_BUSY_POLL_US,
    config_path: str | None = None,
    group: str | None = None,
) -> int:
    if os.geteuid() != 0:
        raise ControlError("the daemon needs root (CAP_NET_ADMIN) to make TAP devices")
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        raise ControlError("/dev/net/tun is missing or not accessible (modprobe tun)")
    if config_path is not None:
        from tapveth.core import config

        config.load(config_path)  # a bad file: one line on stderr, exit 2, nothing made
    import uvloop

    from tapveth.daemon.service import Daemon

    setup_logging(log_level)

    async def amain() -> int:
        try:
            daemon = Daemon(path, busy_poll_us, config_path, group)
        except PermissionError as exc:
            raise ControlError(f"cannot start: {exc}") from None
        return await daemon.run()

    # A loop factory, not uvloop.install(): the netlink worker thread must keep getting plain
    # asyncio loops, which pyroute2 needs.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(amain())
