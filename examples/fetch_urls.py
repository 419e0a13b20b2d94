"""I/O-bound jobs: fetch pages from a slow HTTP server, hundreds at a time per process.

    tm-run examples/fetch_urls.py 1 n=20000 --concurrency 200
    python examples/fetch_urls.py --compare n=200     # a plain loop against the line above

Every page takes the server 50 ms to answer, so a plain loop fetching one
URL after another does about 20 jobs/s (18-20 measured).  A slave runs
``handle_job`` in a pool of ``--concurrency`` gevent greenlets, and because
tm-slave applies gevent's monkey patching before importing this module,
``urllib.request`` waits for the network cooperatively: while one greenlet
waits, the others send their requests.  One slave process with
``--concurrency 200`` keeps 200 requests in flight, so latency alone would
allow 200 / 50 ms = 4,000 jobs/s; what it reaches is set by CPU, since HTTP
in Python is not free at either end.  Measured on a 2-core VM busy with
other work: up to 2,250 jobs/s (1,000 to 2,250 as that load varied), over
100 times the plain loop.
The slave spent 0.33 ms of CPU per job (urllib), which caps one slave near
3,000 jobs/s; the master, server included, spent 0.22 ms.  With more free
cores, a second slave process (``tm-run examples/fetch_urls.py 2 ...``)
should bring the rate closer to the 4,000 jobs/s the latency allows (not
measured: that VM had 2 cores).

The server is part of the example, so it needs nothing else: ``get_jobs``
starts it, ``gevent.pywsgi.WSGIServer`` on 127.0.0.1 and a free port, inside
the master process (tm-master monkey-patches too, so its greenlets share the
process with the master's own loop), then yields the URLs
``http://127.0.0.1:PORT/page/I``.  So the server lives exactly as long as the
master: the slaves must run on this host (tm-run does that), and an
interrupted run that is resumed gets a new server on a new port - which is
why ``get_jobs(last=...)`` reads only the page number from the URL it is
given back.  The handler sleeps with ``gevent.sleep``, never blocking the
master.  A real job module would of course fetch URLs from elsewhere and
keep only ``handle_job``.

Arguments: ``n=N`` jobs (default 2000).
"""

from __future__ import annotations

import re
import sys
import time

DELAY = 0.05  # seconds the server takes to answer
_PAGE = re.compile(r"/page/(\d+)")
_server = None  # the server started by get_jobs in this process
_opener = None  # urllib opener of this process (no proxies: the server is local)


def page_body(i: int) -> bytes:
    return f"page {i}\n".encode()


def app(environ, start_response):
    """The WSGI application: /page/I answers 'page I' after DELAY seconds."""
    import gevent

    match = _PAGE.fullmatch(environ.get("PATH_INFO", ""))
    if not match:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such page\n"]
    gevent.sleep(DELAY)
    body = page_body(int(match.group(1)))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def start_server() -> int:
    """Start the server in this process (once) on a free port; the port."""
    global _server
    if _server is None:
        from gevent.pywsgi import WSGIServer

        server = WSGIServer(("127.0.0.1", 0), app, log=None, backlog=1024)
        server.start()  # serves in greenlets from now on; returns at once
        _server = server
    return _server.server_port


def _first_page(last) -> int:
    """The page to start at: a resumed run gives back a URL (its port may be gone)."""
    if isinstance(last, str) and "/" in last:
        return int(last.rsplit("/", 1)[1])
    return int(last)


def get_jobs(last=0, n="2000", **kwargs):
    """Start the server, then yield the URLs of pages last..n-1."""
    port = start_server()
    for i in range(_first_page(last), int(n)):
        yield f"http://127.0.0.1:{port}/page/{i}"


def count_jobs(n="2000", **kwargs):
    return int(n)


def handle_job(url):
    """Fetch the page and check its body; raise if it is wrong."""
    global _opener
    import urllib.request

    if _opener is None:
        _opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with _opener.open(url, timeout=30) as response:
        body = response.read()
    expected = page_body(_first_page(url))
    if body != expected:
        raise ValueError(f"{url} answered {body[:100]!r}, expected {expected!r}")


# ----------------------------------------------------------------- --compare


def compare(n: int) -> int:
    """Time a plain loop over n jobs, then tm-run with 1 slave at --concurrency 200 over 50 n jobs."""
    import os
    import subprocess
    import tempfile

    from gevent import monkey

    monkey.patch_all()  # the server runs in this process: the loop must let it answer
    n = max(1, min(n, 1000))  # bounded: the plain loop takes about n / 20 seconds
    started = time.monotonic()
    for url in get_jobs(n=str(n)):
        handle_job(url)
    loop_rate = n / (time.monotonic() - started)
    print(f"plain loop:                             {n:6d} jobs, {loop_rate:7.0f} jobs/s", flush=True)

    jobs = 50 * n
    with tempfile.TemporaryDirectory() as state_dir:
        argv = [sys.executable, "-m", "taskmaster", "run", os.path.abspath(__file__), "1", f"n={jobs}",
                "--concurrency", "200", "--no-progress", "--log-level", "warning"]
        result = subprocess.run(argv, cwd=state_dir, capture_output=True, text=True, timeout=300)
    match = re.search(r"(\d+) finished, (\d+) failed in ([\d.]+)s \((\d+) jobs/s\)", result.stderr)
    if result.returncode != 0 or not match:
        print(f"tm-run failed (exit code {result.returncode}):\n{result.stderr[-2000:]}", file=sys.stderr)
        return 1
    print(f"tm-run, 1 slave, --concurrency 200:     {jobs:6d} jobs, {int(match.group(4)):7d} jobs/s "
          f"({float(match.group(3)):.1f}s, slave start-up included)")
    return 0


def main(argv: list[str]) -> int:
    usage = f"usage: python {sys.argv[0]} --compare [n=200]"
    options = dict(arg.partition("=")[::2] for arg in argv if arg != "--compare")
    if "--compare" not in argv or set(options) - {"n"}:
        print(usage, file=sys.stderr)
        return 2
    return compare(int(options.get("n", "200")))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
