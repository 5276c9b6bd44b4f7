"""A real systemd as PID 1 of a throw-away systemd-nspawn container, built from the machine's own
root (read-only, with a tmpfs overlay), with the project bound at /opt/project. Follows the
recipe measured on this machine; everything is removed by close()."""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time

CGROUP_HIERARCHIES = ("systemd", "unified")


class Container:
    def __init__(self, project: str, tag: str, binds: dict[str, str] | None = None) -> None:
        """`binds`: more host directories to bind, host path -> path inside (read-only)."""
        self.tag = tag
        self.root = tempfile.mkdtemp(prefix="tvnspawn-")
        extra = " ".join(f"--bind-ro={host}:{inside}" for host, inside in (binds or {}).items())
        script = f"""
set -e
for h in {" ".join(CGROUP_HIERARCHIES)}; do
  mkdir -p /sys/fs/cgroup/$h/ct-{tag}
  echo $$ > /sys/fs/cgroup/$h/ct-{tag}/cgroup.procs
done
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
exec unshare --mount --propagation private -- sh -c '
  mount --bind / {self.root} && mount -o remount,bind,ro {self.root} &&
  exec systemd-nspawn -q -D {self.root} --volatile=overlay --register=no --keep-unit \\
     --private-network --system-call-filter=bpf --console=pipe \\
     --bind={project}:/opt/project {extra} -b -- systemd.unit=basic.target'
"""
        self.proc = subprocess.Popen(
            ["setsid", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid1 = self._find_pid1()
        self._wait_running()

    def _wait_running(self) -> None:
        """Until the container's manager answers on its bus and has finished booting."""
        deadline = time.monotonic() + 60
        while True:
            r = self.run("systemctl", "is-system-running", "--wait", check=False)
            if r.stdout.strip() in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the container did not boot: {r.stdout} {r.stderr}")
            time.sleep(0.1)

    def _find_pid1(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.proc.returncode}")
            nspawn = subprocess.run(
                ["pgrep", "-s", str(self.proc.pid), "-x", "systemd-nspawn"],
                capture_output=True,
                text=True,
            ).stdout.split()
            for pid in nspawn:
                child = subprocess.run(
                    ["pgrep", "-P", pid, "-x", "systemd"], capture_output=True, text=True
                ).stdout.split()
                if child:
                    return int(child[0])
            time.sleep(0.05)
        raise RuntimeError("the container's systemd did not start")

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "--", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} in the container failed ({r.returncode}): "
                f"{r.stdout.strip()} {r.stderr.strip()}"
            )
        return r

    def write(self, path: str, text: str) -> None:
        self.run(
            "sh",
            "-c",
            f"mkdir -p $(dirname {path}) && cat > {path} <<'TAPVETH_EOF'\n{text}\nTAPVETH_EOF",
        )

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def close(self) -> None:
        try:
            subprocess.run(
                ["pkill", "-TERM", "-s", str(self.proc.pid), "-x", "systemd-nspawn"], check=False
            )
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                subprocess.run(["pkill", "-KILL", "-s", str(self.proc.pid)], check=False)
                self.proc.wait(10)
        finally:
            for h in CGROUP_HIERARCHIES:
                base = f"/sys/fs/cgroup/{h}/ct-{self.tag}"
                for dirpath, _, _ in sorted(os.walk(base), key=lambda x: -len(x[0])):
                    with contextlib.suppress(OSError):
                        os.rmdir(dirpath)
            shutil.rmtree(self.root, ignore_errors=True)
