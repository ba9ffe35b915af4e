"""Helpers for the observability tests: shipped files, promtool, PromQL extraction."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "config" / "prometheus"
RULES_DIR = PROM_DIR / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yaml"))
CLUSTER_CONFIG = PROM_DIR / "prometheus.yml"
LOCAL_CONFIG = PROM_DIR / "local" / "prometheus.yml"
GRAFANA_DIR = REPO / "config" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources.yaml"
RULES_TEST = Path(__file__).resolve().parent / "rules_test.yaml"

PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "group_left",
    "group_right",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make install` (Debian package prometheus)")
    return path


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def render_local_config(file_sd_dir: Path, *, interval: str | None = None) -> str:
    """local/prometheus.yml with its placeholders replaced, as local mode does."""
    text = LOCAL_CONFIG.read_text()
    text = text.replace("@FILE_SD_DIR@", str(file_sd_dir)).replace("@RULES_DIR@", str(RULES_DIR))
    if interval is not None:
        config = yaml.safe_load(text)
        config["global"].update(
            scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval
        )
        text = yaml.safe_dump(config, sort_keys=False)
    return text


def load_rules() -> list[dict[str, Any]]:
    """Every rule of every shipped rule file, with its group name added."""
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out.append({**rule, "group": group["name"], "file": path.name})
    return out


def alerts() -> list[dict[str, Any]]:
    return [r for r in load_rules() if "alert" in r]


def load_dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def iter_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Panels at any depth (rows may nest panels)."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_queries() -> list[tuple[str, str, str, str]]:
    """(dashboard file, panel title, refId, expr) of every panel target."""
    out = []
    for path in DASHBOARDS:
        for panel in iter_panels(load_dashboard(path)):
            if panel.get("type") == "row":
                continue
            for t in panel.get("targets", []):
                out.append((path.name, panel["title"], t.get("refId", "?"), t.get("expr", "")))
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace Grafana variables ($name, ${name}, [[name]]), longest names first."""
    for name in sorted(variables, key=len, reverse=True):
        value = variables[name]
        expr = expr.replace("${" + name + "}", value).replace("[[" + name + "]]", value)
        expr = re.sub(r"\$" + re.escape(name) + r"\b", lambda _m, v=value: v, expr)
    return expr


def selectors(expr: str) -> list[str]:
    """The vector selectors of a PromQL expression (metric{matchers}), in order, deduplicated.

    Enough PromQL for our own expressions: label lists of by/on/... are removed, so are range
    and subquery brackets and string literals outside matchers; a name followed by "(" is a
    function or aggregation.
    """
    s = re.sub(r"\[[^\]]*\]", "", expr)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    found: list[str] = []
    pattern = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{[^}]*\})|([a-zA-Z_:][a-zA-Z0-9_:]*)")
    for m in pattern.finditer(s):
        name, matchers, bare = m.group(1), m.group(2), m.group(3)
        if matchers is not None:
            sel = (name or "") + matchers
        else:
            rest = s[m.end() :].lstrip()
            if rest.startswith("(") or bare.lower() in PROMQL_KEYWORDS:
                continue
            if re.fullmatch(r"\d.*", bare):
                continue
            sel = bare
        if sel not in found:
            found.append(sel)
    return found


@pytest.fixture(scope="session")
def obs() -> Any:
    """These helpers, for the test modules (pytest's importlib mode cannot import conftest)."""
    import sys

    return sys.modules[__name__]


def kubernetes_promtool() -> str:
    """promtool built with Kubernetes discovery by hack/build-promtool.sh.

    The script is idempotent and returns at once when the binary is cached; on a fresh machine
    it builds it from the Go module proxy (a few minutes), so `make test` needs no extra step.
    """
    script = str(REPO / "hack" / "build-promtool.sh")
    built = run(script, timeout=1500)
    path = Path(run(script, "--print-path").stdout.strip())
    if built.returncode != 0 or not path.is_file():
        pytest.fail(f"hack/build-promtool.sh failed ({built.returncode}):\n{built.stderr[-3000:]}")
    return str(path)
