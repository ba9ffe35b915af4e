"""Which dataset URLs a trainer may fetch: the admin's rule, checked by operator and trainer."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence


def url_problem(url: str, schemes: Sequence[str], hosts: Sequence[str]) -> str | None:
    """Why `url` is not allowed (one sentence), or None when it is.

    `hosts` empty allows any host; an entry starting with "." also allows its subdomains.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in schemes:
        return (
            f"dataset URL {url}: scheme {parts.scheme or '(none)'!r} is not allowed "
            f"(allowed: {', '.join(schemes)}); ask the cluster admin or use another URL"
        )
    host = (parts.hostname or "").lower()
    if hosts and not any(_matches(host, allowed.lower()) for allowed in hosts):
        return (
            f"dataset URL {url}: host {host or '(none)'!r} is not allowed "
            f"(allowed: {', '.join(hosts)}); ask the cluster admin or use another URL"
        )
    return None


def _matches(host: str, allowed: str) -> bool:
    if allowed.startswith("."):
        return host.endswith(allowed) or host == allowed[1:]
    return host == allowed
