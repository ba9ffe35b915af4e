"""The Argo CD health check for ModelDeployment, tested the way Argo CD tests its own checks.

Every case runs twice: through Argo CD itself (the ``argocd`` binary built by
hack/build-argocd.sh evaluates the shipped argocd-cm, on the controller's code path; the
integration tier) and through the fast lupa harness below, and a test checks that the two agree
on every case and on every harness rule, so the harness can be trusted while editing health.lua.

Argo CD keeps each check as ``resource_customizations/<group>/<Kind>/health.lua`` beside a
``health_test.yaml`` (``tests: [{inputPath, healthStatus: {status, message}}]``) and
``testdata/*.yaml``; ``util/lua/health_test.go`` runs every case. Here lupa's Lua 5.1 plays
gopher-lua, set up like Argo CD's ``util/lua/lua.go`` sets it up for a check configured in
argocd-cm (``useOpenLibs`` unset): only the base, table and a "safe" os library (time, date)
are open, ``require`` finds only that os (there is no global ``os`` in Argo CD), the script
gets ``obj`` and one second. A script
that leans on string/math (open in a plain Lua, closed in production) fails here as it would
in the cluster.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

from modelops_testenv.argocd import HealthCheckFailed, evaluate_health

ROOT = Path(__file__).resolve().parents[2]
CHECK_DIR = ROOT / "argocd" / "health" / "modelops.dev" / "ModelDeployment"
CM_KEY = "resource.customizations.health.modelops.dev_ModelDeployment"
TIME_LIMIT_S = 1.0  # Argo CD's context.WithTimeout(…, 1*time.Second) in runLua
# gitops-engine's HealthStatusCode values accepted by isValidHealthStatusCode.
VALID_STATUSES = {"Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing"}
INVALID_STATUS = "Lua returned an invalid health status"

# gopher-lua's OpenBase (baselib.go) globals; `require`/`module` come from its loadlib there.
BASE_FUNCTIONS = [
    "assert",
    "collectgarbage",
    "dofile",
    "error",
    "getfenv",
    "getmetatable",
    "ipairs",
    "load",
    "loadfile",
    "loadstring",
    "module",
    "newproxy",
    "next",
    "pairs",
    "pcall",
    "print",
    "rawequal",
    "rawget",
    "rawset",
    "select",
    "setfenv",
    "setmetatable",
    "tonumber",
    "tostring",
    "type",
    "unpack",
    "xpcall",
]

SANDBOX = """
local BASE, real_G = ...
local loadstring, setfenv, tostring, type, error = loadstring, setfenv, tostring, type, error
local debug, clock = debug, os.clock

return function(script, obj, seconds)
  local env = {}
  for _, name in ipairs(BASE) do env[name] = real_G[name] end
  env._G = env
  env._VERSION = "Lua 5.1"
  local tbl = {}
  for k, v in pairs(table) do tbl[k] = v end
  env.table = tbl
  local safe_os = {time = os.time, date = os.date}  -- Argo CD's oslib_safe.go
  -- No global `os`: Argo CD's OpenSafeOs registers its functions under lua.TabLibName, which
  -- leaves `os` unset (checked against argocd); only require("os") gives the safe os.
  env.require = function(name)
    if name == "os" then return safe_os end
    error("module " .. tostring(name) .. " not found (Argo CD preloads only os)", 2)
  end
  -- Code loaded at run time sees the same restricted globals.
  local function bind(f, ...) if f then setfenv(f, env) end return f, ... end
  env.loadstring = function(s, n) return bind(loadstring(s, n)) end
  env.load = function(fn, n) return bind(load(fn, n)) end
  env.loadfile = function(p) return bind(loadfile(p)) end
  env.dofile = function(p) local f = assert(env.loadfile(p)); return f() end
  -- gopher-lua prints fractions as Go's %v, C Lua as %.14g: only integers print alike.
  env.tostring = function(v)
    if type(v) == "number" and v % 1 ~= 0 then
      error("tostring(" .. string.format("%.17g", v) .. "): fractions print differently in "
        .. "gopher-lua; round first", 2)
    end
    return tostring(v)
  end
  env.obj = obj

  local chunk, err = loadstring(script, "=health.lua")
  if not chunk then return false, err end
  setfenv(chunk, env)
  -- gopher-lua gives strings a metatable (s:sub(...)) only when it opens the string library.
  local string_mt = debug.getmetatable("")
  debug.setmetatable("", nil)
  local deadline = clock() + seconds
  debug.sethook(function()
    if clock() > deadline then error("script exceeded the " .. seconds .. " s limit", 0) end
  end, "", 1000)
  local ok, result = pcall(chunk)
  debug.sethook()
  debug.setmetatable("", string_mt)
  return ok, result
end
"""


class LuaCheckError(Exception):
    """The script failed: Argo CD would show the resource's health as an error."""


def _strip_none(value: Any) -> Any:
    # Argo CD's decodeValue maps JSON null to nil, i.e. the key is absent in Lua.
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value if v is not None]
    return value


def run_health(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run ``script`` on ``obj`` as Argo CD's ExecuteHealthLua would; return {status, message}."""
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    run = runtime.execute(SANDBOX, runtime.table_from(BASE_FUNCTIONS), runtime.globals())
    ok, result = run(script, runtime.table_from(_strip_none(obj), recursive=True), TIME_LIMIT_S)
    if not ok:
        raise LuaCheckError(str(result))
    if lua51.lua_type(result) != "table":
        raise LuaCheckError(f"expect table output from Lua script, not {lua51.lua_type(result)}")
    out = dict(result)
    status, message = out.get("status"), out.get("message", "")
    if not isinstance(message, str):
        raise LuaCheckError(f"message must be a string, got {message!r}")
    if status not in VALID_STATUSES:
        return {"status": "Unknown", "message": INVALID_STATUS}
    return {"status": status, "message": message}


def load_cases() -> list[Any]:
    spec = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())
    return [
        pytest.param(case["inputPath"], case["healthStatus"], id=Path(case["inputPath"]).stem)
        for case in spec["tests"]
    ]


@pytest.fixture(scope="module")
def script() -> str:
    return (CHECK_DIR / "health.lua").read_text()


@pytest.mark.parametrize(("input_path", "expected"), load_cases())
def test_health_case(script: str, input_path: str, expected: dict[str, str]):
    obj = yaml.safe_load((CHECK_DIR / input_path).read_text())
    # CPU time, as the sandbox's limit (os.clock) counts it: the script's own cost. A
    # loaded machine stretched the wall clock of this very case to 0.7 s.
    started = time.process_time()
    got = run_health(script, obj)
    elapsed = time.process_time() - started
    assert got == {"status": expected["status"], "message": expected.get("message", "")}
    assert elapsed < 0.1, (
        f"{input_path}: {elapsed:.3f} s of CPU, far from Argo CD's 1 s but suspicious"
    )


def test_every_testdata_file_has_a_case():
    spec = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())
    used = {Path(case["inputPath"]).name for case in spec["tests"]}
    present = {p.name for p in (CHECK_DIR / "testdata").glob("*.yaml")}
    assert present == used, f"unreferenced: {present - used}, missing: {used - present}"


def test_every_status_the_issue_names_is_covered():
    spec = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())
    seen = {case["healthStatus"]["status"] for case in spec["tests"]}
    assert {"Healthy", "Progressing", "Degraded", "Unknown"} <= seen


# The harness itself: it must refuse what production Argo CD refuses.


CLOSED_SNIPPETS = [
    'return {status = string.format("%s", "Healthy")}',
    "return {status = math.floor(1.5) and 'Healthy'}",
    'return {status = ("Healthy"):sub(1)}',
    "local s = coroutine.create(function() end) return {status = 'Healthy'}",
    "local io = require('io') return {status = 'Healthy'}",
    "return {status = os.time() and 'Healthy'}",
]
OPEN_SNIPPET = """
  local os2 = require("os")
  local t = {}
  table.insert(t, "a")
  table.insert(t, tostring(obj.metadata.generation))
  assert(type(os2.time()) == "number" and os2.exit == nil and os == nil)
  return {status = "Healthy", message = table.concat(t, "-") .. select("#", 1, 2)}
"""


@pytest.mark.parametrize(
    "snippet",
    [*CLOSED_SNIPPETS, "return {status = 'Healthy', message = tostring(0.5)}"],
    ids=[
        "string",
        "math",
        "string-method",
        "coroutine",
        "require-io",
        "global-os",
        "tostring-fraction",
    ],
)
def test_harness_closes_what_argocd_closes(snippet: str):
    with pytest.raises(LuaCheckError):
        run_health(snippet, {})


def test_harness_opens_what_argocd_opens():
    got = run_health(OPEN_SNIPPET, {"metadata": {"generation": 3}})
    assert got == {"status": "Healthy", "message": "a-32"}


def test_harness_enforces_the_time_limit():
    started = time.monotonic()
    with pytest.raises(LuaCheckError, match="exceeded the 1 s limit"):
        run_health("while true do end", {})
    assert time.monotonic() - started < 5


def test_harness_maps_an_invalid_status_to_unknown():
    assert run_health("return {status = 'Fine'}", {}) == {
        "status": "Unknown",
        "message": INVALID_STATUS,
    }
    with pytest.raises(LuaCheckError, match="expect table"):
        run_health("return 'Healthy'", {})


def test_argocd_cm_patch_carries_this_exact_script(script: str):
    """The argocd-cm patch is generated from health.lua, so the tested file is what ships."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "argocd")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "argocd-cm"]
    assert len(cms) == 1
    assert cms[0]["data"][CM_KEY] == script
    assert cms[0]["metadata"]["namespace"] == "argocd"


# Through Argo CD's own evaluator.


@pytest.fixture(scope="module")
def shipped_argocd_cm() -> dict[str, Any]:
    """argocd-cm exactly as argocd/install.sh applies it (kustomize of argocd/)."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "argocd")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    return next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "argocd-cm"
    )


def _argocd(cm: dict[str, Any], obj: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    return evaluate_health(cm, obj, tmp_path / "argocd-health")


def _with_script(cm: dict[str, Any], script: str) -> dict[str, Any]:
    return {**cm, "data": {**cm["data"], CM_KEY: script}}


@pytest.mark.integration
def test_argocd_evaluates_every_case_as_expected_and_as_lupa_does(
    shipped_argocd_cm: dict[str, Any], script: str, tmp_path: Path
):
    """One test for all cases: each argocd run is a process start (~0.3 s)."""
    mismatches = []
    for param in load_cases():
        input_path, expected = param.values
        obj = yaml.safe_load((CHECK_DIR / input_path).read_text())
        want = {"status": expected["status"], "message": expected.get("message", "")}
        got = _argocd(shipped_argocd_cm, obj, tmp_path)
        lupa = run_health(script, obj)
        if got != want or lupa != got:
            mismatches.append(f"{input_path}: argocd {got}, lupa {lupa}, expected {want}")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.integration
def test_argocd_reports_pending_deletion_before_the_script(
    shipped_argocd_cm: dict[str, Any], tmp_path: Path
):
    """gitops-engine answers for an object being deleted without running health.lua."""
    obj = yaml.safe_load((CHECK_DIR / "testdata" / "serving.yaml").read_text())
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert _argocd(shipped_argocd_cm, obj, tmp_path) == {
        "status": "Progressing",
        "message": "Pending deletion",
    }


@pytest.mark.integration
def test_argocd_refuses_what_the_harness_refuses(shipped_argocd_cm: dict[str, Any], tmp_path: Path):
    """The harness's closed libraries and time limit are Argo CD's: its snippets fail there too.

    (Its tostring-of-a-fraction rule is stricter than Argo CD on purpose: gopher-lua formats
    fractions unlike C Lua, so the harness could not predict the message.)"""
    snippets = [*CLOSED_SNIPPETS, "while true do end", "return 'Healthy'"]
    accepted = []
    for snippet in snippets:
        try:
            got = _argocd(_with_script(shipped_argocd_cm, snippet), {"kind": "X"}, tmp_path)
        except HealthCheckFailed:
            continue
        accepted.append(f"{snippet!r} -> {got}")
    assert not accepted, "Argo CD ran what the lupa harness refuses:\n" + "\n".join(accepted)


@pytest.mark.integration
def test_argocd_opens_what_the_harness_opens(shipped_argocd_cm: dict[str, Any], tmp_path: Path):
    cm = _with_script(shipped_argocd_cm, OPEN_SNIPPET)
    obj = {"apiVersion": "modelops.dev/v1alpha1", "kind": "ModelDeployment"}
    obj["metadata"] = {"name": "x", "generation": 3}
    assert _argocd(cm, obj, tmp_path) == run_health(OPEN_SNIPPET, obj)
    invalid = _with_script(shipped_argocd_cm, "return {status = 'Fine'}")
    assert _argocd(invalid, obj, tmp_path) == run_health("return {status = 'Fine'}", obj)
