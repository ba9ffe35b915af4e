"""Host-wide state a real node changes, recorded before and undone after.

Kernel settings, the pod bridge, the egress guard, iptables chains and nf_tables tables,
cgroups, mounts and left-over processes. Each ``record`` returns plain JSON-able data that the
node writes to its work folder first, so that the next start can undo what a killed launcher
left (see :func:`modelops_testenv.node.clean_stale_nodes`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

# Kernel settings the kubelet (vm.*, kernel.*), the CNI bridge plugin (ip_forward) or the node
# itself (inotify limits) change. Restored to what they were, in this order.
SYSCTLS = (
    "net.ipv4.ip_forward",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxbytes",
    "kernel.keys.root_maxkeys",
    "fs.inotify.max_user_instances",
    "fs.inotify.max_user_watches",
)
# Chains of ours, the kubelet's, kube-proxy's and CNI portmap's; only those that did not exist
# before go.
OWN_CHAIN_PREFIXES = ("KUBE-", "CNI-", "MODELOPS-")
EGRESS_CHAIN = "MODELOPS-EGRESS"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls(names: Iterable[str] = SYSCTLS) -> dict[str, str]:
    """Current values of ``names`` (settings this kernel lacks are left out)."""
    values = {}
    for name in names:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def write_sysctl(name: str, value: str) -> None:
    _sysctl_path(name).write_text(f"{value}\n")


def restore_sysctls(saved: dict[str, str]) -> list[str]:
    """Write back every setting that differs from ``saved``; return the names restored."""
    restored = []
    for name, value in saved.items():
        current = read_sysctls([name]).get(name)
        if current is not None and current.split() != value.split():
            write_sysctl(name, value)
            restored.append(name)
    return restored


def run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


# ----------------------------------------------------------------------------------- network


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def create_bridge(name: str, address: str) -> None:
    """A bridge ``name`` with ``address`` (CIDR), up; the CNI bridge plugin joins pods to it."""
    run("ip", "link", "add", name, "type", "bridge")
    run("ip", "addr", "add", address, "dev", name)
    run("ip", "link", "set", name, "up")


def delete_link(name: str) -> None:
    if link_exists(name):
        run("ip", "link", "delete", name)


def add_egress_guard(bridge: str) -> None:
    """Drop everything pods send off the bridge, everything forwarded onto it, and any other
    forwarding (the node turns ``ip_forward`` on; the machine must not become a router).

    In the mangle table's FORWARD chain, which runs before the filter table where kube-proxy
    prepends its own accept rules: nothing can jump the queue. Only bridge → bridge traffic
    (pod to pod, after kube-proxy's DNAT too) passes. The first rule's packet counter is what
    tests read (:func:`egress_drops`).
    """
    for tool in ("iptables", "ip6tables"):
        mangle = (tool, "-w", "-t", "mangle")
        run(*mangle, "-N", EGRESS_CHAIN)
        run(*mangle, "-A", EGRESS_CHAIN, "-i", bridge, "!", "-o", bridge, "-j", "DROP")
        run(*mangle, "-A", EGRESS_CHAIN, "!", "-i", bridge, "-o", bridge, "-j", "DROP")
        run(*mangle, "-A", EGRESS_CHAIN, "!", "-i", bridge, "!", "-o", bridge, "-j", "DROP")
        run(*mangle, "-I", "FORWARD", "1", "-j", EGRESS_CHAIN)


def egress_drops() -> int:
    """Packets the egress guard dropped (IPv4, pods → anything off the bridge)."""
    out = run("iptables", "-w", "-t", "mangle", "-L", EGRESS_CHAIN, "-v", "-x", "-n").stdout
    rules = [line.split() for line in out.splitlines()[2:] if line.strip()]
    return int(rules[0][0])


def iptables_chains() -> dict[str, list[str]]:
    """``{"<tool> <table>": [chain, ...]}`` for IPv4 and IPv6."""
    chains: dict[str, list[str]] = {}
    for tool in ("iptables", "ip6tables"):
        table = ""
        for line in run(f"{tool}-save").stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
                chains.setdefault(f"{tool} {table}", [])
            elif line.startswith(":"):
                chains[f"{tool} {table}"].append(line[1:].split()[0])
    return chains


def nft_tables() -> list[str]:
    """``["<family> <name>", ...]`` of nf_tables."""
    out = run("nft", "list", "tables").stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()]


def remove_new_chains(before: dict[str, list[str]]) -> list[str]:
    """Delete chains of ours/Kubernetes' that were not in ``before``, and jumps to them."""
    removed = []
    for key, chains in iptables_chains().items():
        tool, table = key.split()
        new = [
            c for c in chains if c.startswith(OWN_CHAIN_PREFIXES) and c not in before.get(key, [])
        ]
        if not new:
            continue
        rules = run(f"{tool}-save", "-t", table).stdout.splitlines()
        for rule in rules:
            words = shlex.split(rule)
            if words[:1] == ["-A"] and words[1] not in new and _jumps_to(words, new):
                run(tool, "-w", "-t", table, "-D", *words[1:], check=False)
        for chain in new:
            run(tool, "-w", "-t", table, "-F", chain, check=False)
        for chain in new:
            if run(tool, "-w", "-t", table, "-X", chain, check=False).returncode == 0:
                removed.append(f"{key} {chain}")
    return removed


def _jumps_to(words: list[str], chains: list[str]) -> bool:
    return any(w in ("-j", "-g") and words[i + 1] in chains for i, w in enumerate(words[:-1]))


def remove_new_nft_tables(before: list[str]) -> list[str]:
    """Delete nf_tables tables that were not in ``before`` and hold no rules any more."""
    removed = []
    for table in nft_tables():
        if table in before:
            continue
        listing = run("nft", "list", "table", *table.split()).stdout
        rules = [
            line
            for line in listing.splitlines()
            if line.strip() and not re.match(r"\s*(table|chain|type|policy|\}|$)", line)
        ]
        if not rules:
            run("nft", "delete", "table", *table.split())
            removed.append(table)
    return removed


# ----------------------------------------------------------------------------------- cgroups


def cgroup_hierarchies() -> list[Path]:
    """Mounted cgroup hierarchies (v1 controllers and the unified v2 one)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2"):
            found.append(Path(fields[1]))
    return found


def create_cgroup(name: str) -> None:
    """``/<name>`` in every hierarchy: the kubelet's cgroupRoot must exist beforehand."""
    for hierarchy in cgroup_hierarchies():
        (hierarchy / name).mkdir(exist_ok=True)


def cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroup(name: str, timeout: float = 20) -> list[int]:
    """Kill every process in ``/<name>`` (all hierarchies), then remove the cgroups.

    Returns the PIDs killed. Raises if a cgroup cannot be removed within ``timeout``.
    """
    killed = sorted(cgroup_pids(name))
    deadline = time.monotonic() + timeout
    while pids := cgroup_pids(name):
        kill_pids(pids)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes left in cgroup /{name}: {sorted(pids)}")
        time.sleep(0.1)
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name
        if not root.is_dir():
            continue
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, root]:
            _rmdir_retry(d, deadline)
    return killed


def _rmdir_retry(path: Path, deadline: float) -> None:
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --------------------------------------------------------------------------------- processes


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def processes() -> dict[int, str]:
    """Every process's command line (arguments joined by spaces; empty for kernel threads)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        found[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def pids_with_cmdline(fragment: str) -> list[int]:
    """Other processes whose command line contains ``fragment`` (a path only we use)."""
    me = os.getpid()
    return [pid for pid, cmd in processes().items() if fragment in cmd and pid != me]


def wait_pids_gone(pids: Iterable[int], timeout: float = 10) -> list[int]:
    """Wait for ``pids`` to exit (zombies count as gone); return those still alive."""
    left = list(pids)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p)]
        if left:
            time.sleep(0.05)
    return left


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# ------------------------------------------------------------------------------------ mounts

_MNT_DETACH = 2


def mount_points() -> list[Path]:
    """Every mount point of this mount namespace (from /proc/self/mountinfo)."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [Path(_unescape(line.split()[4])) for line in lines]


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first."""
    root = path.resolve()
    found = {p for p in mount_points() if p == root or root in p.parents}
    return sorted(found, key=lambda p: -len(p.parts))


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def unmount_all(path: Path) -> list[Path]:
    """Unmount everything at or below ``path`` (deepest first, detaching busy ones).

    Raises if a mount stays, so that no caller deletes files a live mount shows.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    done: list[Path] = []
    for _ in range(5):  # stacked mounts on one point need one umount each
        points = mounts_under(path)
        if not points:
            return done
        for point in points:
            if libc.umount2(str(point).encode(), _MNT_DETACH) == 0:
                done.append(point)
    left = mounts_under(path)
    if left:
        raise RuntimeError(f"could not unmount {', '.join(map(str, left))}")
    return done


def safe_rmtree(path: Path) -> None:
    """Remove ``path`` after unmounting whatever is mounted below it; never through a mount.

    ``rm --one-file-system`` skips anything still mounted (belt and braces), and is faster than
    shutil.rmtree on an image store's many small files.
    """
    if not path.exists():
        return
    unmount_all(path)
    run("rm", "-rf", "--one-file-system", "--", str(path), timeout=600)
