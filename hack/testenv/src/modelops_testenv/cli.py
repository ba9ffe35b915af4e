"""Command line: start a control plane, print its KUBECONFIG line, run until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

from .binaries import ETCD_VERSION, K8S_VERSION, KWOK_VERSION, BinariesNotFound
from .controlplane import ControlPlane, terminate_as_interrupt
from .process import ComponentExited

log = logging.getLogger("modelops_testenv")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m modelops_testenv",
        description=(
            f"Start a throw-away Kubernetes {K8S_VERSION} control plane on loopback (etcd "
            f"{ETCD_VERSION}, kube-apiserver, kube-controller-manager; kube-scheduler + kwok "
            f"{KWOK_VERSION} fake nodes unless --nodes 0). Ctrl-C stops it and removes its data."
        ),
    )
    p.add_argument("--nodes", type=int, default=1, help="fake kwok nodes (0: no scheduler/kwok)")
    p.add_argument("--bin-dir", type=Path, help="folder with the binaries (default: build cache)")
    p.add_argument(
        "--kubeconfig", type=Path, help="also copy the admin kubeconfig here (kept after exit)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs) after exit")
    p.add_argument("--timeout", type=float, default=60.0, help="start timeout in seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[testenv] %(message)s", stream=sys.stderr)
    try:
        plane = ControlPlane(
            nodes=args.nodes,
            bin_dir=args.bin_dir,
            start_timeout=args.timeout,
            keep_workdir=args.keep,
            # For people trying things: ordinary pods land on the fake nodes.
            taint_nodes=False,
        )
    except BinariesNotFound as err:
        log.error("%s", err)
        return 2
    with terminate_as_interrupt(sigint=True):
        try:
            log.info("starting (k8s %s, etcd %s) ...", K8S_VERSION, ETCD_VERSION)
            plane.start()
            kubeconfig = plane.kubeconfig
            if args.kubeconfig:
                shutil.copyfile(plane.kubeconfig, args.kubeconfig)
                args.kubeconfig.chmod(0o600)
                kubeconfig = args.kubeconfig.resolve()
            rss = plane.rss_bytes()
            log.info(
                "ready in %.1f s at %s; memory (RSS) %s MiB: %s",
                plane.startup_seconds or 0.0,
                plane.server,
                sum(rss.values()) >> 20,
                ", ".join(f"{k} {v >> 20}" for k, v in rss.items()),
            )
            log.info("ready after (s): %s", ", ".join(f"{k} {v}" for k, v in plane.timings.items()))
            if plane.node_names:
                log.info("fake nodes: %s", ", ".join(plane.node_names))
            log.info("logs: %s; Ctrl-C stops the cluster", plane.logs_dir)
            print(f"export KUBECONFIG={kubeconfig}", flush=True)
            while True:
                failed = plane.failed_components()
                if failed:
                    for comp in failed:
                        log.error("%s", ComponentExited(comp))
                    return 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            log.info("stopping ...")
            return 0
        except (ComponentExited, TimeoutError) as err:
            log.error("%s", err)
            return 1
        finally:
            plane.stop()
            log.info("stopped")
