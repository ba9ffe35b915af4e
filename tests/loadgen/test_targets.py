import json
import os

import pytest

from modelops_loadgen.targets import (
    TargetError,
    TargetSet,
    TargetsFileWatcher,
    parse_targets_json,
    validate_base_url,
)


def test_valid_base_urls_are_normalised():
    assert validate_base_url(" http://127.0.0.1:8000/ ") == "http://127.0.0.1:8000"
    assert validate_base_url("https://h.example/prefix") == "https://h.example/prefix"


@pytest.mark.parametrize("bad", ["", "127.0.0.1:8000", "ftp://h", "http://", 3, "http://h/?q=1"])
def test_invalid_urls_say_what_is_expected(bad):
    with pytest.raises(TargetError):
        validate_base_url(bad)


def test_targets_json_must_be_a_list():
    assert parse_targets_json('["http://a:1", "http://b:2"]', "f") == ["http://a:1", "http://b:2"]
    with pytest.raises(TargetError, match="JSON list"):
        parse_targets_json('{"a": 1}', "f")
    with pytest.raises(TargetError, match="not valid JSON"):
        parse_targets_json("[", "f")


def test_target_set_builds_request_heads():
    ts = TargetSet(["http://127.0.0.1:8000"], "/v2/models/iris/infer")
    (ep,) = ts.endpoints
    assert ep.head.startswith(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n")
    assert ep.key == ("http", "127.0.0.1", 8000)
    assert ts.replace(["http://127.0.0.1:8000"]) is False
    assert ts.replace(["http://127.0.0.1:8001", "http://127.0.0.1:8002"]) is True
    assert ts.generation == 2


def _write(path, urls, mtime_ns):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(urls))
    tmp.replace(path)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_watcher_rereads_on_change_and_keeps_the_last_good_list(tmp_path):
    path = tmp_path / "targets.json"
    _write(path, ["http://127.0.0.1:1"], 1_000_000_000)
    ts = TargetSet(["http://127.0.0.1:1"], "/predict")
    w = TargetsFileWatcher(path, ts)
    assert w.poll() is False  # unchanged
    _write(path, ["http://127.0.0.1:2", "http://127.0.0.1:3"], 2_000_000_000)
    assert w.poll() is True
    assert ts.bases == ("http://127.0.0.1:2", "http://127.0.0.1:3")
    path.write_text("[not json")
    os.utime(path, ns=(3_000_000_000, 3_000_000_000))
    assert w.poll() is False
    assert ts.bases == ("http://127.0.0.1:2", "http://127.0.0.1:3")
    path.unlink()
    assert w.poll() is False
    assert ts.bases == ("http://127.0.0.1:2", "http://127.0.0.1:3")
    _write(path, [], 4_000_000_000)
    assert w.poll() is True
    assert ts.endpoints == ()
