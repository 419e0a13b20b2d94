"""The example module from the README: 20,000 no-op jobs.

tm-run taskmaster/example.py 2
"""


def get_jobs(last=0, **kwargs):
    # `last` is passed when a previous run is resumed: the first job that
    # was not finished.
    for i in range(int(last), 20000):
        yield i  # jobs must be picklable


def handle_job(i):
    pass  # must be idempotent: resuming may run a job again
