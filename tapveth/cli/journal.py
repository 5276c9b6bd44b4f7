"""Where the daemon's log lines go and how they look: under systemd each line carries the
sd-daemon `<N>` priority prefix, so journald files errors as errors (`journalctl -p err`); on a
terminal, a time stamp and the level name."""

import logging
import os
import sys

# syslog(3) priorities, as sd-daemon(3) prefixes them: <2> crit, <3> err, <4> warning,
# <5> notice, <6> info, <7> debug.
_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
DEBUG_PRIORITY = 7


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (a level between two takes the lower one's)."""
    for level, prio in _PRIORITIES:
        if levelno >= level:
            return prio
    return DEBUG_PRIORITY


def stderr_is_journal(environ: dict[str, str] | None = None, fd: int = 2) -> bool:
    """Whether stderr is journald's stream: JOURNAL_STREAM holds its device and inode, and a
    child that inherited the variable but writes elsewhere must not use prefixes."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """`<N>message`, the prefix on every line (a traceback's lines too): journald reads a
    prefix per line, and a line without one gets the unit's default priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def error_line(text: str) -> None:
    """A user error's one line on stderr; an error in the journal too (ExecReload's
    --check-config, a daemon refusing its file at start)."""
    prefix = f"<{priority(logging.ERROR)}>" if stderr_is_journal() else ""
    print(prefix + text, file=sys.stderr)


def setup(level: str) -> None:
    """The `tapveth` logger at `level`, to stderr; other libraries' loggers at warning."""
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(message)s"))  # journald stamps the time
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("tapveth").setLevel(level.upper())
