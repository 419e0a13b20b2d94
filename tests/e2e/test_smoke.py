"""The shortest end-to-end proof: tm-run handles every job once."""

from conftest import handled, tm


def test_tm_run_handles_every_job(procs, recording):
    module, record, env = recording
    result = procs.run(tm("run", module, 2, "n=5000", "--no-progress"), env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(handled(record)) == list(range(5000))
    assert "5000 finished, 0 failed" in result.stderr
