"""One record per attachment, keyed as the spec asks (network, container id, interface), so
that GC can tell which attachments exist and tear down those the runtime no longer knows.
A record is a small JSON file under DATA_DIR/NETWORK/, written atomically."""

import contextlib
import json
import os
from typing import Any

from tapveth.cni.protocol import state_key


def _dir(data_dir: str, network: str) -> str:
    return os.path.join(data_dir, network)


def save(data_dir: str, network: str, record: dict[str, Any]) -> None:
    directory = _dir(data_dir, network)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, state_key(record["containerID"], record["ifname"]) + ".json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def remove(data_dir: str, network: str, container_id: str, ifname: str) -> None:
    directory = _dir(data_dir, network)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, state_key(container_id, ifname) + ".json"))
    with contextlib.suppress(OSError):
        os.rmdir(directory)  # only when it is empty
    with contextlib.suppress(OSError):
        os.rmdir(data_dir)


def records(data_dir: str, network: str) -> list[dict[str, Any]]:
    directory = _dir(data_dir, network)
    out = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "containerID" in record and "ifname" in record:
            out.append(record)
    return out
