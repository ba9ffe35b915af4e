"""The launcher never leaves processes or data behind: Ctrl-C, SIGTERM, even SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelops_testenv.controlplane import remove_stale_workdirs

pytestmark = pytest.mark.integration


def children(pid: int) -> dict[int, str]:
    """Processes whose parent is ``pid``: ``{pid: command name}``."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found[int(stat.parent.name)] = name
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


def wait_gone(pids: list[int], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


@contextlib.contextmanager
def launcher(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``python -m modelops_testenv`` until it printed its KUBECONFIG line; killed if left over."""
    log = (tmp_path / "launcher.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelops_testenv", *args],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the cluster is ready (or the launcher fails)
        assert line.startswith("export KUBECONFIG="), (tmp_path / "launcher.log").read_text()
        yield proc, Path(line.strip().split("=", 1)[1])
    finally:
        if proc.poll() is None:  # the test failed: SIGKILL, and PR_SET_PDEATHSIG does the rest
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_everything_and_removes_the_data(tmp_path: Path, sig: signal.Signals):
    with launcher(tmp_path, "--nodes", "1") as (proc, kubeconfig):
        kids = children(proc.pid)
        assert sorted(kids.values()) == sorted(
            ["etcd", "kube-apiserver", "kube-controller", "kube-scheduler", "kwok"]
        ), kids  # /proc's comm is cut at 15 characters
        assert kubeconfig.is_file()
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0, (tmp_path / "launcher.log").read_text()
    assert wait_gone(list(kids)) == []
    assert not kubeconfig.parent.exists()


def test_sigkill_of_the_launcher_takes_the_components_down(tmp_path: Path):
    with launcher(tmp_path, "--nodes", "0") as (proc, kubeconfig):
        kids = list(children(proc.pid))
        assert len(kids) == 3
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup code can run: PR_SET_PDEATHSIG does it
        proc.wait(timeout=10)
    assert wait_gone(kids) == []
    workdir = kubeconfig.parent
    assert workdir.exists()  # nobody could remove it ...
    assert workdir in remove_stale_workdirs(workdir.parent)  # ... until the next start does
    assert not workdir.exists()


def fake_bin_dir(tmp_path: Path, **scripts: str) -> Path:
    """The real binaries, except those given as shell scripts (keyword = binary name)."""
    from modelops_testenv.binaries import default_bin_dir

    d = tmp_path / "bin"
    d.mkdir()
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
        script = scripts.get(name.replace("-", "_"))
        if script is None:
            (d / name).symlink_to(default_bin_dir() / name)
        else:
            (d / name).write_text(f"#!/bin/sh\n{script}\n")
            (d / name).chmod(0o755)
    return d


def test_a_component_that_dies_at_start_fails_fast_with_its_log(tmp_path: Path):
    from modelops_testenv import ComponentExited, ControlPlane

    plane = ControlPlane(bin_dir=fake_bin_dir(tmp_path, etcd="echo 'etcd: boom' >&2; exit 3"))
    with pytest.raises(ComponentExited, match=r"(?s)etcd exited with code 3.*etcd: boom"):
        plane.start()
    assert plane.components == {}
    assert plane._workdir is None


def test_a_start_timeout_leaves_no_process_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from modelops_testenv import ControlPlane

    # A kube-apiserver that never gets ready, with a grandchild in its process group.
    bins = fake_bin_dir(tmp_path, kube_apiserver='sleep 300 & echo $! > "$0.child"; wait')
    plane = ControlPlane(bin_dir=bins, start_timeout=3)
    started: list[int] = []
    original = plane._launch

    def spy(name: str, args: list[str]):
        comp = original(name, args)
        started.append(comp.pid)
        return comp

    monkeypatch.setattr(plane, "_launch", spy)
    with pytest.raises(TimeoutError, match="kube-apiserver /readyz"):
        plane.start()
    grandchild = int((bins / "kube-apiserver.child").read_text())
    assert len(started) == 2  # etcd and the fake kube-apiserver
    assert wait_gone([*started, grandchild], timeout=15) == []
    assert plane._workdir is None
