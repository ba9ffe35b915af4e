"""The metrics exposition built at scrape time: names, labels, cumulative buckets."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from modelops_server.metrics import LATENCY_BUCKETS, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_counts_and_cumulative_buckets(knn_model):
    metrics = Metrics()
    metrics.set_model(knn_model)
    metrics.observe_predictions([0], 0.001)  # exactly on a bound: counted in le="0.001"
    metrics.observe_predictions([2, 2, 1], 0.0004)
    metrics.observe_predictions([1], 99.0)  # above every bound: only +Inf
    metrics.count_request("/predict", 200)
    metrics.count_request("/predict", 200)
    metrics.count_error("/predict", "invalid_request")
    s = samples(metrics)
    species = {"setosa": 1, "versicolor": 2, "virginica": 2}
    for name, count in species.items():
        key = ("api_predictions_total", (("model_version", "knn"), ("species", name)))
        assert s[key] == count
    bucket = "api_prediction_latency_seconds_bucket"
    assert s[(bucket, (("le", "0.00025"),))] == 0
    assert s[(bucket, (("le", "0.0005"),))] == 1
    assert s[(bucket, (("le", "0.001"),))] == 2
    assert s[(bucket, (("le", repr(LATENCY_BUCKETS[-1])),))] == 2
    assert s[(bucket, (("le", "+Inf"),))] == 3
    assert s[("api_prediction_latency_seconds_count", ())] == 3
    assert s[("api_prediction_latency_seconds_sum", ())] == 0.001 + 0.0004 + 99.0
    assert s[("api_requests_total", (("code", "200"), ("endpoint", "/predict")))] == 2
    assert s[("api_errors_total", (("endpoint", "/predict"), ("kind", "invalid_request")))] == 1
    labels = (
        ("algorithm", "knn"),
        ("model", "iris"),
        ("predictor", "vectorised"),
        ("version", "knn"),
    )
    assert s[("model_info", labels)] == 1
    assert ("process_cpu_seconds_total", ()) in s


def test_disabled_metrics_count_nothing(knn_model):
    metrics = Metrics(enabled=False)
    metrics.set_model(knn_model)
    metrics.observe_predictions([0], 0.001)
    metrics.count_request("/predict", 200)
    s = samples(metrics)
    assert s[("api_predictions_total", (("model_version", "knn"), ("species", "setosa")))] == 0
    assert ("api_requests_total", (("code", "200"), ("endpoint", "/predict"))) not in s
