import pytest
from pydantic import ValidationError

from modelops_loadgen.cli import build_parser, settings_from_args
from modelops_loadgen.settings import LoadgenSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("MODELOPS_LOADGEN_") or k in ("API_HOST", "API_PORT"):
            monkeypatch.delenv(k)


def test_defaults_match_the_seed():
    s = LoadgenSettings()
    assert s.default_target == "http://localhost:8000"
    assert s.rate == 1.0
    assert s.endpoint == "predict"
    assert s.payload == "uniform"
    assert s.metrics_port == 9100
    assert s.model_name == "iris"
    assert not s.bounded


def test_seed_env_names_and_prefixed_env(monkeypatch):
    monkeypatch.setenv("API_HOST", "ml-api-service")
    monkeypatch.setenv("API_PORT", "32675")
    monkeypatch.setenv("MODELOPS_LOADGEN_RATE", "2.5")
    monkeypatch.setenv("MODELOPS_LOADGEN_ARRIVAL", "poisson")
    monkeypatch.setenv("MODELOPS_LOADGEN_ENDPOINT", "infer")
    monkeypatch.setenv("MODELOPS_LOADGEN_PAYLOAD", "iris")
    monkeypatch.setenv("MODELOPS_LOADGEN_CONCURRENCY", "16")
    monkeypatch.setenv("MODELOPS_LOADGEN_TIMEOUT", "1.5")
    monkeypatch.setenv("MODELOPS_LOADGEN_METRICS_PORT", "0")
    monkeypatch.setenv("MODELOPS_LOADGEN_MODEL_NAME", "flowers")
    s = LoadgenSettings()
    assert s.default_target == "http://ml-api-service:32675"
    assert (s.rate, s.arrival, s.endpoint, s.payload) == (2.5, "poisson", "infer", "iris")
    assert (s.concurrency, s.timeout, s.metrics_port, s.model_name) == (16, 1.5, 0, "flowers")


def test_flags_override_env(monkeypatch):
    monkeypatch.setenv("MODELOPS_LOADGEN_RATE", "2.5")
    monkeypatch.setenv("API_PORT", "9000")
    args = build_parser().parse_args(["--rate", "7", "--port", "9001", "--duration", "3"])
    s = settings_from_args(args)
    assert s.rate == 7.0
    assert s.api_port == 9001
    assert s.duration == 3.0
    assert s.bounded


def test_targets_file_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELOPS_LOADGEN_TARGETS_FILE", str(tmp_path / "t.json"))
    assert LoadgenSettings().targets_file == tmp_path / "t.json"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0},
        {"rate": -1},
        {"concurrency": 0},
        {"arrival": "uniform"},
        {"endpoint": "classify"},
        {"api_port": 70000},
        {"timeout": 0},
        {"targets": ["http://a:1"], "targets_file": "x.json"},
    ],
)
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValidationError):
        LoadgenSettings(**kwargs)


def test_rows_per_request_defaults():
    assert LoadgenSettings().rows_per_request == 1
    assert LoadgenSettings(endpoint="batch").rows_per_request == 8
    assert LoadgenSettings(endpoint="infer").rows_per_request == 1
    assert LoadgenSettings(endpoint="infer", batch_size=4).rows_per_request == 4
    assert LoadgenSettings(endpoint="predict", batch_size=4).rows_per_request == 1


def test_host_forms():
    assert LoadgenSettings(api_host="::1", api_port=1).default_target == "http://[::1]:1"
    assert LoadgenSettings(api_host="http://h:5/").default_target == "http://h:5"


def test_a_target_flag_replaces_the_env_target_source(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELOPS_LOADGEN_TARGETS_FILE", str(tmp_path / "t.json"))
    s = settings_from_args(build_parser().parse_args(["--target", "http://127.0.0.1:1"]))
    assert s.targets == ["http://127.0.0.1:1"]
    assert s.targets_file is None
    monkeypatch.delenv("MODELOPS_LOADGEN_TARGETS_FILE")
    monkeypatch.setenv("MODELOPS_LOADGEN_TARGETS", '["http://127.0.0.1:2"]')
    assert LoadgenSettings().targets == ["http://127.0.0.1:2"]
    s = settings_from_args(build_parser().parse_args(["--targets-file", "x.json"]))
    assert s.targets == []
    assert str(s.targets_file) == "x.json"
