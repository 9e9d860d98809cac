"""_metrics over Airflow's own Stats, into a real StatsD client and a UDP listener on loopback."""

from __future__ import annotations

import logging
import socket
import sys

import pytest

from airflow_secure_mail import _metrics
from tests.integration.metrics.udp import Line, statsd_stats


def test_counter_goes_out_as_the_total_and_once_more_named_by_its_rule(monkeypatch):
    with statsd_stats(monkeypatch) as statsd:
        _metrics.incr("refused", rule="spam", dag_id="reports.weekly")
        _metrics.incr("refused", 2, rule="allowed_recipient_domains")
        assert statsd.lines == [
            Line("airflow.secure_mail.refused", 1, "c"),
            Line("airflow.secure_mail.refused.spam", 1, "c"),
            Line("airflow.secure_mail.refused", 2, "c"),
            Line("airflow.secure_mail.refused.allowed_recipient_domains", 2, "c"),
        ]


def test_timer_in_milliseconds_and_gauge_named_by_host_without_its_dots(monkeypatch):
    with statsd_stats(monkeypatch) as statsd:
        _metrics.timing("delivery_latency", 0.25)
        _metrics.gauge("relay_cert_days_left", 41, host="smtp.example.com")
        assert statsd.lines == [
            Line("airflow.secure_mail.delivery_latency", 250, "ms"),
            Line("airflow.secure_mail.relay_cert_days_left", 41, "g"),
            Line("airflow.secure_mail.relay_cert_days_left.smtp_example_com", 41, "g"),
        ]


def test_a_zero_count_sends_nothing(monkeypatch):
    with statsd_stats(monkeypatch) as statsd:
        _metrics.incr("recipients", 0, outcome="refused")
        assert statsd.lines == []


def test_names_fold_the_tags_that_matter_in_a_fixed_order_as_safe_segments():
    assert _metrics.names("sent") == ["secure_mail.sent"]
    assert _metrics.names("vault_errors", kind="unreachable", path="smtp/x") == [
        "secure_mail.vault_errors",
        "secure_mail.vault_errors.unreachable",
    ]
    assert _metrics.names("x", host="a.b", rule="r 1") == ["secure_mail.x", "secure_mail.x.r_1.a_b"]


def test_the_statsd_host_is_resolved_once_not_per_metric(monkeypatch):
    """A send must not wait on DNS: the StatsD client resolves its host when Airflow builds it, once."""
    lookups: list[object] = []
    real = socket.getaddrinfo

    def counting(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        lookups.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    with statsd_stats(monkeypatch, STATSD_HOST="localhost") as statsd:
        for _ in range(50):
            _metrics.incr("sent")
        assert statsd.total("airflow.secure_mail.sent") == 50
    assert lookups == ["localhost"]


def test_a_failing_backend_never_fails_the_caller(monkeypatch):
    from airflow.sdk._shared.observability.metrics import stats as module

    class Broken:
        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            raise OSError("network is unreachable")

    with statsd_stats(monkeypatch):
        monkeypatch.setattr(module, "_backend", Broken())
        _metrics.incr("sent")
        _metrics.timing("delivery_latency", 1.0)
        _metrics.gauge("relay_cert_days_left", 3, host="h")


def test_an_unresolvable_statsd_host_drops_metrics_quietly(monkeypatch):
    with statsd_stats(monkeypatch, STATSD_HOST="statsd.invalid") as statsd:
        _metrics.incr("sent")
        assert statsd.lines == []


def test_a_process_airflow_did_not_configure_is_configured_once(monkeypatch):
    """dag.test() or a CLI before anything imported airflow.sdk.serde: Airflow's Stats has no factory yet."""
    from airflow.sdk._shared.observability.metrics import stats as module

    with statsd_stats(monkeypatch) as statsd:
        monkeypatch.setattr(module, "_factory", None)
        monkeypatch.setattr(module, "_backend", None)
        _metrics.incr("sent")
        assert statsd.lines == [Line("airflow.secure_mail.sent", 1, "c")]


def test_statsd_on_without_the_package_is_said_once_with_the_fix(monkeypatch, caplog):
    """Airflow logs one error from its stats module and then drops every metric; the task log says what to do."""
    monkeypatch.setitem(sys.modules, "statsd", None)  # as if not installed: imports fail, find_spec is None
    caplog.set_level(logging.WARNING)
    with statsd_stats(monkeypatch) as statsd:
        _metrics.incr("sent")
        _metrics.incr("sent")
        assert statsd.lines == []
    ours = [r for r in caplog.records if r.name == "airflow_secure_mail._metrics"]
    assert [r.getMessage() for r in ours] == [
        "[metrics] statsd_on is true but the 'statsd' package is not installed: Airflow drops every metric, "
        'ours included; install "airflow-secure-mail[statsd]" (or "apache-airflow[statsd]") on the workers.'
    ]


@pytest.mark.parametrize("setting", [{"STATSD_ON": "False"}, {"STATSD_DATADOG_ENABLED": "True"}])
def test_no_warning_when_statsd_is_not_what_airflow_uses(monkeypatch, setting):
    monkeypatch.setitem(sys.modules, "statsd", None)
    for key, value in setting.items():
        monkeypatch.setenv(f"AIRFLOW__METRICS__{key}", value)
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", setting.get("STATSD_ON", "True"))
    assert _metrics.statsd_missing() is False


def test_opentelemetry_gets_the_same_names_with_the_tags_as_attributes():
    """Airflow's OTel logger (``[metrics] otel_on``) with an in-memory reader instead of the OTLP exporter."""
    from airflow.sdk._shared.observability.metrics import stats as module
    from airflow.sdk._shared.observability.metrics.otel_logger import SafeOtelLogger
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    otel = SafeOtelLogger(MeterProvider(metric_readers=[reader]), prefix="airflow")
    saved = module._factory, module._backend, module._export_legacy_names
    module.initialize(factory=lambda: otel, export_legacy_names=False)
    _metrics._reset_for_tests()
    try:
        _metrics.incr("refused", rule="spam")
        _metrics.timing("delivery_latency", 0.5)
        _metrics.gauge("relay_cert_days_left", 12, host="smtp.example.com")
        data = reader.get_metrics_data()
    finally:
        module._factory, module._backend, module._export_legacy_names = saved
        _metrics._reset_for_tests()
    points = {
        m.name: [(dict(p.attributes or {}), getattr(p, "value", getattr(p, "sum", None))) for p in m.data.data_points]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert points["airflow.secure_mail.refused"] == [({"rule": "spam"}, 1)]
    assert points["airflow.secure_mail.refused.spam"] == [({"rule": "spam"}, 1)]
    assert points["airflow.secure_mail.delivery_latency"] == [({}, 500.0)]
    assert points["airflow.secure_mail.relay_cert_days_left.smtp_example_com"] == [({"host": "smtp.example.com"}, 12)]
