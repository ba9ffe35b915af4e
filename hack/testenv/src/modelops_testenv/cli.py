"""Command line: start a control plane, print its KUBECONFIG line, run until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import time
from pathlib import Path

from .binaries import ETCD_VERSION, K8S_VERSION, KWOK_VERSION, BinariesNotFound, find_kubectl
from .controlplane import ControlPlane, terminate_as_interrupt
from .images import COMPONENTS, ImagesNotFound, find_image
from .node import RealNode, RealNodeError
from .nodeconfig import REAL_NODE_TAINT
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
    p.add_argument("--timeout", type=float, default=None, help="start timeout in seconds")
    p.add_argument(
        "--real-node",
        action="store_true",
        help="also a real node (kubelet, containerd, CNI, kube-proxy, CoreDNS; needs root), "
        "with the product images imported when they are built",
    )
    p.add_argument(
        "--no-images", action="store_true", help="with --real-node: import only the pause image"
    )
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=0.0,
        help="with --real-node: seconds to wait for another launcher's real node to stop",
    )
    return p


def _make(args: argparse.Namespace) -> tuple[ControlPlane, RealNode | None]:
    if args.real_node:
        node = RealNode(
            nodes=args.nodes,
            bin_dir=args.bin_dir,
            start_timeout=args.timeout or 120.0,
            keep_workdir=args.keep,
            taint_fake_nodes=False,
            lock_timeout=args.lock_timeout,
        )
        return node.plane, node
    plane = ControlPlane(
        nodes=args.nodes,
        bin_dir=args.bin_dir,
        start_timeout=args.timeout or 60.0,
        keep_workdir=args.keep,
        # For people trying things: ordinary pods land on the fake nodes.
        taint_nodes=False,
    )
    return plane, None


def _import_product_images(node: RealNode) -> None:
    archives = []
    for component in COMPONENTS:
        try:
            archives.append(find_image(component).archive)
        except ImagesNotFound as err:
            log.info("not importing %s: %s", component, err)
    if archives:
        seconds = node.import_images(archives)
        log.info("imported %d product images in %.1f s: %s", len(archives), seconds, node.images())


def _report(plane: ControlPlane, node: RealNode | None) -> None:
    rss = plane.rss_bytes()
    log.info(
        "ready in %.1f s at %s; memory (RSS) %s MiB: %s",
        (node or plane).startup_seconds or 0.0,
        plane.server,
        sum(rss.values()) >> 20,
        ", ".join(f"{k} {v >> 20}" for k, v in rss.items()),
    )
    log.info("ready after (s): %s", ", ".join(f"{k} {v}" for k, v in plane.timings.items()))
    if plane.node_names:
        log.info("fake nodes: %s", ", ".join(plane.node_names))
    if node is not None:
        node_rss = node.rss_bytes()
        log.info(
            "real node %s: memory (RSS) %s MiB: %s; ready after (s): %s",
            node.name,
            sum(node_rss.values()) >> 20,
            ", ".join(f"{k} {v >> 20}" for k, v in node_rss.items()),
            ", ".join(f"{k} {v}" for k, v in node.timings.items()),
        )
        taint = f"{REAL_NODE_TAINT['key']}={REAL_NODE_TAINT['value']}:{REAL_NODE_TAINT['effect']}"
        log.info("the real node is tainted %s: pods need a toleration to land there", taint)
    log.info("logs: %s; Ctrl-C stops the cluster", plane.logs_dir)
    with contextlib.suppress(BinariesNotFound):
        log.info("kubectl at the API server's version: %s", find_kubectl())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[testenv] %(message)s", stream=sys.stderr)
    try:
        plane, node = _make(args)
    except BinariesNotFound as err:
        log.error("%s", err)
        return 2
    with terminate_as_interrupt(sigint=True):
        try:
            log.info("starting (k8s %s, etcd %s) ...", K8S_VERSION, ETCD_VERSION)
            (node or plane).start()
            if node is not None and not args.no_images:
                _import_product_images(node)
            kubeconfig = plane.kubeconfig
            if args.kubeconfig:
                shutil.copyfile(plane.kubeconfig, args.kubeconfig)
                args.kubeconfig.chmod(0o600)
                kubeconfig = args.kubeconfig.resolve()
            _report(plane, node)
            print(f"export KUBECONFIG={kubeconfig}", flush=True)
            while True:
                failed = node.failed_components() if node else plane.failed_components()
                if failed:
                    for comp in failed:
                        log.error("%s", ComponentExited(comp))
                    return 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            log.info("stopping ...")
            return 0
        except (ComponentExited, TimeoutError, RealNodeError, ImagesNotFound) as err:
            log.error("%s", err)
            return 1
        finally:
            (node or plane).stop()
            log.info("stopped")
