"""The operator at work with namespaced RBAC only (config/rbac/namespaced): a RoleBinding in the
namespace it watches and the cut-down cluster role, nothing else (issue 15)."""

from __future__ import annotations

import signal
import sys
import uuid

import pytest

from .conftest import OperatorProcess
from .test_lifecycle import _serve_v1

pytestmark = pytest.mark.integration


def test_operator_trains_and_serves_with_namespaced_rbac_only(
    control_plane, cluster, namespace, trained, wait, operator_rbac, tmp_path
):
    system_ns = f"nsop-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", system_ns)
    manifest = operator_rbac(
        "config/overlays/namespaced", system_ns, system_ns, {"mlops-puj": namespace}
    )
    user = f"system:serviceaccount:{system_ns}:modelops-operator"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{system_ns}"]
    operator = OperatorProcess(
        control_plane.user_kubeconfig(user, groups), namespace, tmp_path / "operator.log"
    )
    try:
        cluster.kubectl("apply", "-f", "-", input=manifest)
        can = ["auth", "can-i", "create", "jobs.batch", "-n", namespace, f"--as={user}"]
        wait(lambda: cluster.kubectl(*can, check=False).strip() == "yes", 30, "RoleBinding")
        assert (
            cluster.kubectl(*can[:-3], "-n", "default", f"--as={user}", check=False).strip() == "no"
        )
        operator.start()
        status = _serve_v1(cluster, trained, wait)
        assert status["phase"] == "Serving" and status["servingVersion"] == "v1"
        assert cluster.job("iris", "v1") is not None
        logs = operator.logs()
        assert "Forbidden" not in logs and " 403" not in logs, logs[-3000:]
    except BaseException:
        sys.stderr.write(operator.logs()[-5000:])
        raise
    finally:
        operator.kill(signal.SIGTERM)
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest, check=False)
        cluster.kubectl("delete", "namespace", system_ns, "--wait=false", check=False)
