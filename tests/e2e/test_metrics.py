"""/metrics of a real master (tm-run, tm-master, taskmaster.run): parsed with prometheus_client, checked
against the job log; the example dashboard and alert rules use only metrics a master exports."""

from __future__ import annotations

import json
import re
import socket
import sys
import urllib.error
import urllib.request

import pytest
import yaml
from conftest import (
    REPO,
    error_line,
    free_port,
    handled,
    start_logged,
    tail,
    tcp_address,
    text,
    tm,
    wait_exit,
    wait_for,
    wait_listening,
)
from prometheus_client.parser import text_string_to_metric_families

N, GATE_AT, FAIL_EVERY, MAX_RETRIES = 200, 195, 10, 2
# Jobs 0, 10, ... 190 fail every try; jobs from GATE_AT on wait for the gate file.
FAILING = len(range(0, GATE_AT, FAIL_EVERY))
FINISHED_BEFORE_GATE = GATE_AT - FAILING


def scrape(port: int) -> dict[str, float] | None:
    """name{labels} -> value, from a real HTTP GET of /metrics; None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def gated_env(env: dict, tmp_path) -> tuple[dict, object]:
    gate = tmp_path / "gate"
    return {**env, "TM_GATE": str(gate), "TM_GATE_AT": str(GATE_AT), "TM_FAIL_EVERY": str(FAIL_EVERY)}, gate


def held_at_the_gate(port: int) -> dict[str, float]:
    """A scrape once every job before the gate is resolved (the gated ones are still running)."""

    def settled():
        m = scrape(port)
        resolved = m and m["taskmaster_jobs_finished_total"] + m["taskmaster_jobs_failed_total"]
        return m if resolved == GATE_AT else None

    return wait_for(settled, 90, interval=0.2, what=f"{GATE_AT} jobs resolved in /metrics")


def check_counters_against_the_job_log(m: dict[str, float], record) -> None:
    assert m["taskmaster_jobs_finished_total"] == len(handled(record)) == FINISHED_BEFORE_GATE
    assert m["taskmaster_jobs_failed_total"] == FAILING
    assert m["taskmaster_jobs_retried_total"] == FAILING * MAX_RETRIES  # every failing job re-queued twice
    assert m["taskmaster_jobs_in_flight"] == N - GATE_AT  # the gated jobs
    assert m["taskmaster_jobs_buffered"] == 0
    assert m["taskmaster_jobs_resolved"] == GATE_AT


@pytest.mark.timeout(150)
def test_tm_run_metrics_agree_with_the_job_log(procs, tmp_path, recording):
    module, record, env = recording
    env, gate = gated_env(env, tmp_path)
    port = free_port()
    log = tmp_path / "run.log"
    argv = tm("run", module, 2, f"n={N}", "--total", N, "--max-retries", MAX_RETRIES, "--metrics-address", port)
    run = start_logged(procs, [*argv, "--no-progress"], log, env)

    m = held_at_the_gate(port)
    check_counters_against_the_job_log(m, record)
    assert m["taskmaster_jobs_total"] == N
    # Both slaves joined (the second may say hello after the first took every job: a busy machine).
    wait_for(lambda: (scrape(port) or {}).get('taskmaster_slaves{state="working"}') == 2, 60,
             what="both slaves working in /metrics")
    assert m['taskmaster_run_state{state="draining"}'] == 1  # every job handed out, the gated ones still running
    assert m["taskmaster_paused"] == 0 and m["taskmaster_rate_limit"] == 0
    assert 0 <= m["taskmaster_checkpoint_age_seconds"] < 3600
    [(info, value)] = [(k, v) for k, v in m.items() if k.startswith("taskmaster_info")]
    assert value == 1 and "recjobs.py:get_jobs" in info and 'version="' in info

    gate.touch()
    assert wait_exit(run, 90, log) == 1, tail(log)  # jobs failed for good: exit 1
    assert len(handled(record)) == N - FAILING
    assert f"{N - FAILING} finished, {FAILING} failed" in text(log)
    assert scrape(port) is None  # the server went with the master


@pytest.mark.timeout(150)
def test_tm_master_serves_metrics_also_while_it_lingers_after_the_run(procs, tmp_path, recording):
    """The final counts can be scraped while the master stays reachable (--linger)."""
    module, record, env = recording
    env, gate = gated_env(env, tmp_path)
    port, address = free_port(), tcp_address()
    mlog = tmp_path / "master.log"
    argv = tm("master", module, f"n={N}", "--address", address, "--max-retries", MAX_RETRIES, "--no-progress")
    master = start_logged(procs, [*argv, "--metrics-address", f"127.0.0.1:{port}", "--linger", "5"], mlog, env)
    wait_listening(master, mlog)
    assert f"serving metrics on http://127.0.0.1:{port}/metrics" in text(mlog)
    start_logged(
        procs, tm("slave", module, "--address", address, "--no-progress", "--concurrency", "8"), tmp_path / "s.log", env
    )
    m = held_at_the_gate(port)
    check_counters_against_the_job_log(m, record)
    assert "taskmaster_jobs_total" not in m  # no --total, no count_jobs: unknown, so not exported

    gate.touch()
    done = wait_for(
        lambda: (m := scrape(port)) and m['taskmaster_run_state{state="finished"}'] == 1 and m,
        60,
        interval=0.1,
        what="the finished run in /metrics (the master lingers)",
    )
    assert done["taskmaster_jobs_finished_total"] == len(handled(record)) == N - FAILING
    assert done["taskmaster_jobs_failed_total"] == FAILING
    assert wait_exit(master, 60, mlog) == 1, tail(mlog)


@pytest.mark.timeout(150)
def test_no_monkey_patch_master_serves_metrics(procs, tmp_path, recording):
    """gevent's server runs on the master's hub: no thread, so no need for monkey patching."""
    module, record, env = recording
    env, gate = gated_env(env, tmp_path)
    port, address = free_port(), tcp_address()
    mlog = tmp_path / "master.log"
    argv = tm("master", module, f"n={N}", "--address", address, "--max-retries", MAX_RETRIES, "--no-progress")
    master = start_logged(procs, [*argv, "--metrics-address", f":{port}", "--no-monkey-patch"], mlog, env)
    wait_listening(master, mlog)
    start_logged(
        procs, tm("slave", module, "--address", address, "--no-progress", "--concurrency", "8"), tmp_path / "s.log", env
    )
    check_counters_against_the_job_log(held_at_the_gate(port), record)
    gate.touch()
    assert wait_exit(master, 60, mlog) == 1, tail(mlog)


@pytest.mark.timeout(120)
def test_python_api_serves_metrics(procs, tmp_path, recording):
    module, record, env = recording
    env, gate = gated_env(env, tmp_path)
    port = free_port()
    code = (
        "import json, taskmaster\n"
        f"r = taskmaster.run({str(module)!r}, processes=2, job_args={{'n': {N}}}, max_retries={MAX_RETRIES}, "
        f"metrics_address='127.0.0.1:{port}')\n"
        "print(json.dumps([r.exit_code, r.finished, r.failed]))\n"
    )
    log = tmp_path / "api.log"
    with open(log, "w") as f:
        proc = procs.start([sys.executable, "-c", code], env=env, stderr=f)
    check_counters_against_the_job_log(held_at_the_gate(port), record)
    gate.touch()
    out, _ = proc.communicate(timeout=60)
    assert json.loads(out.splitlines()[-1]) == [1, N - FAILING, FAILING], tail(log)


@pytest.mark.parametrize("command", ["master", "run"])
@pytest.mark.parametrize("value", ["nonsense", "host:", "127.0.0.1:99999", "::1:9090"])
def test_a_bad_metrics_address_is_one_line(procs, tmp_path, recording, command, value):
    module, record, env = recording
    argv = tm(command, module, *(["1"] if command == "run" else []), "--metrics-address", value)
    result = procs.run(argv, env=env, timeout=30)
    error_line(result, f"tm-{command}", "--metrics-address", "is not a metrics address")
    assert not list(tmp_path.glob("*.state")) and not handled(record)


@pytest.mark.parametrize("command", ["master", "run"])
def test_a_metrics_port_in_use_is_one_line_and_nothing_runs(procs, tmp_path, recording, command):
    module, record, env = recording
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        argv = tm(command, module, *(["2"] if command == "run" else []), "--metrics-address", port)
        result = procs.run([*argv, "--address", tcp_address()], env=env, timeout=60)
    if command == "master":
        error_line(result, "tm-master", f"127.0.0.1:{port}", "already in use", "--metrics-address")
    else:
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        [line] = [line for line in result.stderr.splitlines() if "error" in line]
        assert line.startswith("tm-master: error: metrics address") and "already in use" in line, result.stderr
    assert not list(tmp_path.glob("*.state")) and not handled(record)


# ---------------------------------------------------------------- examples

METRIC = re.compile(r"\btaskmaster_[a-z_]+\b")


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((REPO / "examples" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((REPO / "examples" / "prometheus-alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_the_alert_rules_cover_a_stalled_run_failures_and_a_stale_checkpoint():
    rules = yaml.safe_load((REPO / "examples" / "prometheus-alerts.yml").read_text())
    by_name = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert set(by_name) == {"TaskmasterRunStalled", "TaskmasterFailureRateHigh", "TaskmasterCheckpointStale"}
    for rule in by_name.values():
        assert rule["for"] and rule["labels"]["severity"] and rule["annotations"]["summary"]
    assert "taskmaster_paused" in by_name["TaskmasterRunStalled"]["expr"]  # a paused run is not a stalled one
    assert "taskmaster_jobs_failed_total" in by_name["TaskmasterFailureRateHigh"]["expr"]
    assert "taskmaster_checkpoint_age_seconds" in by_name["TaskmasterCheckpointStale"]["expr"]


@pytest.mark.timeout(120)
def test_every_metric_the_examples_use_is_exported_by_a_master(procs, tmp_path, recording):
    module, record, env = recording
    env, gate = gated_env(env, tmp_path)
    port = free_port()
    log = tmp_path / "run.log"
    argv = tm("run", module, 1, f"n={N}", "--total", N, "--max-retries", MAX_RETRIES, "--metrics-address", port)
    run = start_logged(procs, [*argv, "--no-progress"], log, env)
    scraped = held_at_the_gate(port)
    gate.touch()
    exported = {name.split("{")[0] for name in scraped}
    used = {name for expr in dashboard_expressions() + alert_expressions() for name in METRIC.findall(expr)}
    assert len(used) >= 10
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    assert wait_exit(run, 60, log) == 1, tail(log)
