"""The metrics collector, in-process: a real Master (prepared, not serving) read at scrape time."""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from taskmaster import __version__
from taskmaster.master.core import Master, MasterConfig
from taskmaster.master.metrics import MetricsServer, parse_address
from taskmaster.wire.protocol import Failure


def get_jobs(last=0, **kwargs):
    yield from range(int(last), 100)


def prepared_master(tmp_path, total=None) -> Master:
    config = MasterConfig(
        state_path=str(tmp_path / "t.state"),
        failures_path=str(tmp_path / "t.failures.jsonl"),
        total=total,
        max_retries=1,
        progress=False,
    )
    master = Master(get_jobs, "mod:get_jobs", {}, config)
    assert master.prepare() is None
    return master


def scrape(master: Master) -> dict[tuple[str, tuple], float]:
    """Every sample, by (name, sorted labels)."""
    text = generate_latest(MetricsServer(master.view, "9999").registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_a_fresh_master_exports_zero_counters_and_no_total(tmp_path):
    master = prepared_master(tmp_path)
    m = scrape(master)
    assert m[("taskmaster_jobs_finished_total", ())] == 0
    assert m[("taskmaster_jobs_failed_total", ())] == 0
    assert m[("taskmaster_jobs_retried_total", ())] == 0
    assert ("taskmaster_jobs_total", ()) not in m  # unknown: left out, not 0
    assert m[("taskmaster_info", (("target", "mod:get_jobs"), ("version", __version__)))] == 1
    assert m[("taskmaster_rate_limit", ())] == 0 and m[("taskmaster_paused", ())] == 0
    assert {labels for name, labels in m if name == "taskmaster_slaves"} == {
        (("state", "working"),),
        (("state", "lost"),),
        (("state", "gone"),),
    }
    assert m[("taskmaster_run_state", (("state", "running"),))] == 1
    # Issue 25, item 14: every state tm-status can show is a series, 0 or 1, also "paused" while running.
    run_states = {labels[0][1]: v for (name, labels), v in m.items() if name == "taskmaster_run_state"}
    assert run_states == {"running": 1, "paused": 0, "draining": 0, "finished": 0}
    assert 0 <= m[("taskmaster_checkpoint_age_seconds", ())] < 3600  # since the start: nothing to lose yet


def test_counters_and_gauges_follow_the_master_state(tmp_path):
    master = prepared_master(tmp_path, total=100)
    ledger, registry = master.ledger, master.registry
    ledger.add(list(range(10)))
    a = registry.join("a", "host", 1, 4, 2500, b"A", now=time.monotonic())
    registry.join("b", "host", 2, 4, 2500, b"B", now=time.monotonic())
    jobs, ranges = ledger.take(6, "a", alone=False)
    batch = registry.hand_out(a, ranges)
    ledger.mark_done([(0, 3)])
    registry.settle(a, batch)
    failure = Failure(batch=batch, position=3, type="ValueError", message="no", traceback="")
    master.failed_jobs.failed(ledger, failure, "a")  # first failure: a retry (max_retries=1)
    master.failed_jobs.failed(ledger, failure, "a")  # second: failed for good
    master.pace.paused, master.pace.rate_limit = True, 250.0
    master.checkpointed_at = time.monotonic() - 5

    m = scrape(master)
    assert m[("taskmaster_jobs_finished_total", ())] == 3
    assert m[("taskmaster_jobs_failed_total", ())] == 1
    assert m[("taskmaster_jobs_retried_total", ())] == 1
    assert m[("taskmaster_jobs_resolved", ())] == 4
    assert m[("taskmaster_jobs_in_flight", ())] == 2  # 6 handed, 3 finished, 1 failed for good
    # 10 pulled, 4 resolved, 2 with the slave: the 4 fresh jobs wait.  (The queue
    # still lists job 3's retry, resolved since: buffered must not count it.)
    assert m[("taskmaster_jobs_buffered", ())] == master.buffered() == 4
    assert m[("taskmaster_jobs_total", ())] == 100
    assert m[("taskmaster_slaves", (("state", "working"),))] == 2
    assert m[("taskmaster_paused", ())] == 1 and m[("taskmaster_rate_limit", ())] == 250
    assert 5 <= m[("taskmaster_checkpoint_age_seconds", ())] < 3600


def test_a_resumed_run_counts_from_zero_but_resolved_includes_earlier_runs(tmp_path):
    master = prepared_master(tmp_path, total=100)
    master.resumed_from.finished, master.resumed_from.failed = 40, 2  # as a checkpoint of an earlier run says
    master.ledger.add(list(range(5)))
    master.ledger.mark_done([(0, 5)])
    m = scrape(master)
    assert m[("taskmaster_jobs_finished_total", ())] == 5  # a counter: this run of the master
    assert m[("taskmaster_jobs_resolved", ())] == 47


@pytest.mark.parametrize(
    "text, expected",
    [
        ("9090", ("127.0.0.1", 9090)),
        (":9090", ("127.0.0.1", 9090)),
        ("localhost:9100", ("localhost", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("*:9100", ("0.0.0.0", 9100)),
        ("[::1]:9100", ("::1", 9100)),
    ],
)
def test_metrics_addresses_default_to_loopback(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "host", "host:", "host:0", "host:70000", "::1:9100", "a b:1", "http://x:1"])
def test_bad_metrics_addresses_say_why(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_a_bad_address_given_in_python_is_a_usage_error(tmp_path):
    from taskmaster.errors import UsageError

    with pytest.raises(UsageError, match="is not a metrics address"):
        MetricsServer(prepared_master(tmp_path).view, "localhost:http")
