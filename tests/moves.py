"""Random, seeded sequences of what scripts do to a veth end (moves, renames, moves with a
rename, up/down, MTU and MAC changes, deleting and re-adding namespaces), the shell script that
issues them with no delay, and the state a kernel veth end is in afterwards.

Pure: the model is computed from the sequence alone, so the conformance test can run the same
script against both backends and compare each with the model. Each end has namespaces and
names of its own (plus one namespace both may share), so two shells, one per end, can run in
parallel and the outcome does not depend on how they interleave."""

import random
import shlex
from dataclasses import dataclass, field, replace

MTUS = (1280, 1400, 1500, 4000, 9000)


@dataclass(frozen=True, slots=True)
class EndState:
    """Where one end is and what it looks like; gone once its namespace or itself was
    deleted (which deletes the whole pair)."""

    netns: str
    name: str
    up: bool = False
    mtu: int = 1500
    address: str = ""
    gone: bool = False


@dataclass(slots=True)
class EndPlan:
    """One end's sequence: the commands, grouped into `ip -batch` runs (one per namespace the
    end is in when they start), and the state it leaves the end in."""

    start: EndState
    batches: list[tuple[str, list[str]]] = field(default_factory=list)  # (netns, commands)
    final: EndState | None = None
    ops: int = 0

    def script(self) -> str:
        """A shell script: each batch is one `ip -n NS -force -batch -` run, so commands in the
        same namespace follow each other with no delay at all; a move ends a batch."""
        lines = ["failed=0"]
        for ns, cmds in self.batches:
            if ns.startswith("!"):  # a shell command of its own (namespace deletion)
                lines.append(f"{{ {ns[1:]} ; }} || failed=1")
                continue
            body = "\n".join(cmds)
            lines.append(f"ip -n {shlex.quote(ns)} -force -batch - >/dev/null <<'EOF' || failed=1")
            lines.append(body)
            lines.append("EOF")
        lines.append("exit $failed")
        return "\n".join(lines) + "\n"


def random_mac(rng: random.Random) -> str:
    """A random unicast, locally administered MAC."""
    first = (rng.randrange(256) & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in [first, *(rng.randrange(256) for _ in range(5))])


def plan_end(
    rng: random.Random,
    start: EndState,
    own_netns: list[str],
    shared_netns: list[str],
    names: list[str],
    nops: int,
    may_delete: bool,
) -> EndPlan:
    """nops random operations on one end, starting from `start`. own_netns may be deleted
    and re-added (when the end is not in them); shared ones never are. With may_delete, the
    sequence may end by deleting the end's namespace or the end itself."""
    plan = EndPlan(start=start)
    st = start
    cur: list[str] = []

    def flush() -> None:
        nonlocal cur
        if cur:
            plan.batches.append((st.netns, cur))
            cur = []

    places = own_netns + shared_netns
    for _ in range(nops):
        kind = rng.choices(
            ["move", "move_rename", "rename", "updown", "mtu", "mac", "nsdel"],
            weights=[5, 3, 3, 4, 2, 2, 1],
        )[0]
        dev = shlex.quote(st.name)
        if kind in ("move", "move_rename"):
            to = rng.choice([n for n in places if n != st.netns])
            new = rng.choice([n for n in names if n != st.name]) if kind == "move_rename" else ""
            cur.append(f"link set dev {dev} netns {to}" + (f" name {new}" if new else ""))
            flush()
            # A move sets the device down; the rename is applied in the new namespace.
            st = replace(st, netns=to, up=False, name=new or st.name)
        elif kind == "rename":
            if st.up:  # the kernel refuses to rename an up device (EBUSY): take it down first
                cur.append(f"link set dev {dev} down")
                st = replace(st, up=False)
            new = rng.choice([n for n in names if n != st.name])
            cur.append(f"link set dev {dev} name {new}")
            st = replace(st, name=new)
        elif kind == "updown":
            st = replace(st, up=not st.up)
            cur.append(f"link set dev {dev} {'up' if st.up else 'down'}")
        elif kind == "mtu":
            st = replace(st, mtu=rng.choice([m for m in MTUS if m != st.mtu]))
            cur.append(f"link set dev {dev} mtu {st.mtu}")
        elif kind == "mac":
            st = replace(st, address=random_mac(rng))
            cur.append(f"link set dev {dev} address {st.address}")
        else:
            others = [n for n in own_netns if n != st.netns]
            if not others:
                continue
            victim = rng.choice(others)
            flush()
            plan.batches.append((f"!ip netns del {victim} ; ip netns add {victim}", []))
        plan.ops += 1
    if may_delete and rng.random() < 0.5:
        flush()
        if st.netns in own_netns and rng.random() < 0.5:
            victim = st.netns
            plan.batches.append((f"!ip netns del {victim} ; ip netns add {victim}", []))
        else:
            plan.batches.append((st.netns, [f"link del dev {shlex.quote(st.name)}"]))
        plan.ops += 1
        st = replace(st, gone=True)
    flush()
    plan.final = st
    return plan
