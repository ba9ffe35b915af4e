"""The one place the operator queries Prometheus: instant queries over its HTTP API.

Both drivers use it for a rollout's analysis (:mod:`modelops.core.rollout` builds the queries
and reads the figures). Any failure — unreachable, timeout, an HTTP or query error — comes back
as :attr:`QueryResults.error` in words a user can act on, never as an exception: the rollout
pauses and says so. Response bodies are not echoed (the URL may come from a spec).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .core.rollout import AnalysisRequest, QueryResults, Sample


def _vector(payload: Any) -> list[Sample]:
    if not isinstance(payload, dict) or payload.get("status") != "success":
        raise ValueError("the answer is not a successful query result")
    data = payload.get("data") or {}
    if data.get("resultType") != "vector":
        raise ValueError(f"expected an instant vector, got {data.get('resultType')!r}")
    return [
        ({str(k): str(v) for k, v in (item.get("metric") or {}).items()}, float(item["value"][1]))
        for item in data.get("result") or []
    ]


def instant(base_url: str, query: str, timeout: float) -> list[Sample]:
    url = base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return _vector(json.loads(response.read()))


def run(request: AnalysisRequest, timeout: float) -> QueryResults:
    """Every query of ``request``; the first failure stops and is reported."""
    url = request.prometheus_url
    if not url.startswith(("http://", "https://")):
        return QueryResults(error=f"Prometheus URL {url!r} is not an http(s) URL")
    vectors: dict[str, list[Sample]] = {}
    for name, query in request.queries.items():
        try:
            vectors[name] = instant(url, query, timeout)
        except urllib.error.HTTPError as exc:
            return QueryResults(error=f"Prometheus at {url} answered HTTP {exc.code} to a query")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return QueryResults(error=f"Prometheus at {url} cannot be reached ({reason})")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return QueryResults(error=f"Prometheus at {url} gave an unreadable answer ({exc})")
    return QueryResults(vectors)
