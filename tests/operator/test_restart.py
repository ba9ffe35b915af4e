"""The operator killed (SIGKILL) at several points of a rollout converges after a restart:
no duplicate Jobs, history intact (issue 6, test 7)."""

from __future__ import annotations

import signal
import time

import pytest

pytestmark = pytest.mark.integration


def _restart(operator):
    operator.kill(signal.SIGKILL)
    operator.start()


def test_sigkill_during_a_rollout_converges(cluster, operator, trained, wait):
    cluster.create_md("iris", {"modelVersion": "v1"})
    wait(lambda: cluster.job("iris", "v1"), 30, "Job v1")
    _restart(operator)  # killed right after creating the Job

    cluster.finish_trainer("iris", "v1", trained("v1"))
    time.sleep(0.3)
    _restart(operator)  # killed while harvesting / gating / rolling out
    status = cluster.serve("iris", "v1")
    assert [h["version"] for h in status["history"]] == ["v1"]

    cluster.patch_md(
        "iris", {"modelVersion": "v2", "training": {"hyperparameters": {"n_neighbors": 3}}}
    )
    wait(lambda: cluster.job("iris", "v2"), 30, "Job v2")
    operator.kill(signal.SIGKILL)  # down while the Job finishes
    cluster.finish_trainer("iris", "v2", trained("v2", "--param", "n_neighbors=3"))
    operator.start()
    wait(
        lambda: (
            cluster.deployment("iris-server")["spec"]["template"]["metadata"]["labels"][
                "modelops.dev/version"
            ]
            == "v2"
        ),
        30,
        "Deployment at v2",
    )
    _restart(operator)  # killed mid-rollout
    status = cluster.serve("iris", "v2")
    assert [h["version"] for h in status["history"]] == ["v2", "v1"]
    assert [h["outcome"] for h in status["history"]] == ["Accepted", "Accepted"]
    assert sorted(j["metadata"]["name"] for j in cluster.jobs("iris")) == [
        "iris-train-v1",
        "iris-train-v2",
    ]
    assert status["phase"] == "Serving"
    # Events are posted after the status write that records the transition, so a restart
    # never repeats one (a kill between the two may drop it).
    rolled = cluster.posted("iris", "RolledOut")
    assert 1 <= len(rolled) <= 2
