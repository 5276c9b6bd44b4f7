"""`tapveth compare`: every behaviour run on a kernel veth pair and on a tapveth pair of a
private daemon, each pair between namespaces of its own, and the observations set side by side.
Everything it makes (namespaces, pairs, processes, the daemon) is removed at the end, even on
Ctrl-C."""

import os
import platform
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import FrameType

from tapveth import __version__
from tapveth.conformance import report
from tapveth.conformance.backends import Backend, KernelVeth, TapVeth
from tapveth.conformance.behaviours import BEHAVIOURS, GROUPS
from tapveth.conformance.lab import Lab
from tapveth.conformance.registry import Behaviour, Observation, Result, exit_status, verdict

EXIT_USER = 2
PREFIX = "tvcmp"  # namespaces: tvcmp-TAG-a, tvcmp-TAG-b...


class CompareUsageError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


def select(only: str | None) -> list[Behaviour]:
    """The behaviours of one group (or one `group/name`), or all of them."""
    if only is None:
        return list(BEHAVIOURS)
    chosen = [b for b in BEHAVIOURS if only in (b.group, b.key)]
    if not chosen:
        raise CompareUsageError(
            f"unknown behaviour group {only!r}: one of {', '.join(GROUPS)}, or GROUP/NAME"
        )
    return chosen


def report_kind(path: str | None) -> str | None:
    """ "md" or "html" from the report file's name; its directory must exist."""
    if path is None:
        return None
    kind = path.rsplit(".", 1)[-1].lower()
    if kind not in ("md", "html"):
        raise CompareUsageError(f"--report {path}: the name must end in .md or .html")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CompareUsageError(f"--report {path}: no directory {directory}")
    return kind


class Comparison:
    """Runs behaviours on a reference backend and a subject, one fresh Lab at a time; the Lab
    in use is kept so that an interrupt can still clean it up."""

    def __init__(
        self, reference: Backend, subject: Backend, progress: Callable[[str], None]
    ) -> None:
        self.reference, self.subject = reference, subject
        self.progress = progress
        self.lab: Lab | None = None

    def observe(self, b: Behaviour, backend: Backend) -> Observation:
        """The behaviour's observation, or {"error": ...} if it could not be made at all."""
        self.lab = Lab(PREFIX)
        try:
            return b.run(self.lab, backend)
        except Exception as exc:  # any failure is a fact of this backend, not of the tool
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            self.cleanup()

    def run(self, behaviours: Sequence[Behaviour]) -> list[Result]:
        results = []
        for i, b in enumerate(behaviours, 1):
            self.progress(f"[{i}/{len(behaviours)}] {b.key}: {b.title}")
            kernel, subject = self.observe(b, self.reference), self.observe(b, self.subject)
            results.append(Result(b, kernel, subject, verdict(b, kernel, subject)))
        return results

    def cleanup(self) -> None:
        if self.lab is not None:
            self.lab.cleanup()
            self.lab = None
            self.subject.settle()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_compare(
    only: str | None = None,
    as_json: bool = False,
    report_path: str | None = None,
    subject: Backend | None = None,
) -> int:
    """The command: 0 when every behaviour agrees or differs as documented, 1 when one
    differs (or the daemon failed), 2 for a user's mistake, 130 when interrupted. With
    `subject`, that backend is compared instead of a private tapveth daemon's pairs."""
    try:
        behaviours = select(only)
        kind = report_kind(report_path)
        if os.geteuid() != 0:
            raise CompareUsageError("compare needs root: it makes namespaces and pairs")
        if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            raise CompareUsageError("/dev/net/tun is missing or not accessible (modprobe tun)")
    except CompareUsageError as exc:
        print(f"tapveth compare: {exc}", file=sys.stderr)
        return EXIT_USER

    def progress(msg: str) -> None:
        if sys.stderr.isatty():
            print(msg, file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, _interrupt)
    from tapveth.private import PrivateDaemon

    daemon = PrivateDaemon(log_level="warning") if subject is None else None
    comparison: Comparison | None = None
    daemon_rc: int | None = 0
    try:
        if daemon is not None:
            daemon.start()
            subject = TapVeth(daemon)
        assert subject is not None
        comparison = Comparison(KernelVeth(), subject, progress)
        results = comparison.run(behaviours)
    except KeyboardInterrupt:
        print("\ntapveth compare: interrupted, cleaning up", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # the private daemon did not start
        print(f"tapveth compare: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop cleanup
        if comparison is not None:
            comparison.cleanup()
        if daemon is not None:
            daemon_rc = daemon.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    status = exit_status(results)
    if daemon is not None and daemon_rc != 0:
        tail = "\n".join(daemon.final_log.splitlines()[-20:])
        print(
            f"tapveth compare: the private daemon exited with status {daemon_rc}; its log ends"
            f" with:\n{tail}",
            file=sys.stderr,
        )
        status = 1
    header = report.Header(
        kernel=platform.release(),
        tapveth=__version__,
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        reference=KernelVeth.label,
        subject=subject.label,
    )
    print(report.as_json(results, header, status) if as_json else report.table(results, header))
    if report_path is not None:
        page = report.markdown if kind == "md" else report.html_page
        try:
            with open(report_path, "w") as f:
                f.write(page(results, header))
        except OSError as exc:
            print(f"tapveth compare: cannot write {report_path}: {exc.strerror}", file=sys.stderr)
            return EXIT_USER
    return status
