"""The pairs that `add` requests asked to persist, remembered in a file beside the control
socket (SOCKET.persist), so that the next daemon on that socket re-attaches them: a config
file is that record for configured pairs; this is it for pairs made by request (containers'
links made by the CNI plugin). Written whole and atomically on every change."""

import contextlib
import json
import logging
import os

from tapveth.core.linkspec import PairSpec, SpecError

log = logging.getLogger("tapveth")


class PersistedPairs:
    def __init__(self, socket_path: str) -> None:
        self.path = socket_path + ".persist"
        self._specs: list[PairSpec] = []

    def load(self) -> list[PairSpec]:
        """The pairs an earlier daemon left; an unreadable record is logged and ignored."""
        try:
            with open(self.path) as f:
                raw = json.load(f)
            self._specs = [PairSpec.from_dict(item) for item in raw]
        except FileNotFoundError:
            self._specs = []
        except (OSError, ValueError, TypeError, SpecError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            self._specs = []
        return list(self._specs)

    def add(self, spec: PairSpec) -> None:
        self._specs.append(spec)
        self._save()

    def drop(self, names: set[str]) -> None:
        """Forget the pair whose two end names are `names`."""
        kept = [s for s in self._specs if {s.end.name, s.peer.name} != names]
        if len(kept) != len(self._specs):
            self._specs = kept
            self._save()

    def _save(self) -> None:
        if not self._specs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump([s.to_dict() for s in self._specs], f)
        os.replace(tmp, self.path)


class PersistentPlaces:
    """Where this daemon's persistent ends are, in a file beside the control socket
    (SOCKET.places): the namespaces the next daemon on this socket searches for left-over
    pairs (see core/orphans.py). Written whole and atomically, only when it changes."""

    def __init__(self, socket_path: str) -> None:
        self.path = socket_path + ".places"
        self._last: list[str] | None = None

    def load(self) -> list[str] | None:
        """The recorded namespace names; None when there is no usable record (the caller
        then searches every namespace)."""
        try:
            with open(self.path) as f:
                raw = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return None
        if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
            log.warning("ignoring %s: not a list of namespace names", self.path)
            return None
        self._last = list(raw)
        return list(raw)

    def save(self, names: list[str]) -> None:
        if names == self._last:
            return
        tmp = self.path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(names, f)
            os.replace(tmp, self.path)
        except OSError as exc:  # the next start searches every namespace instead
            log.warning("cannot record where persistent ends are (%s): %s", self.path, exc)
            return
        self._last = list(names)
