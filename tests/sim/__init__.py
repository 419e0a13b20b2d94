"""A deterministic simulation of whole runs, in the manner of FoundationDB's simulation tests and TigerBeetle's VOPR.

One ``random.Random(seed)`` draws a scenario - jobs, iterator, settings,
network misbehaviour, a schedule of faults - and drives every choice of the
run; one simulated clock (``scheduler``) orders every event.  A seed replays
exactly: ``python -m tests.sim --seed N --verbose`` prints the same trace
(and the same trace digest) every time.  See README.rst, "How the
guarantees are checked".

What runs is the real code, wherever it can:

* the master: ``taskmaster.master.Master`` through ``handle``/``tick`` (with
  its dispatcher, ledger, registry, controls, failure records), writing a
  real state file (``checkpoint.Saver``) and a real failures file in a
  temporary directory; after a crash or a stop, a new ``Master`` resumes
  from them with ``prepare()``.  Its filler is the real ``JobSource.fill``,
  run as a simulated process: it pulls when the master makes room and at the
  master's ``gevent.sleep(0)``, at a simulated moment (``master_host``);
* the slaves: a real ``Slave`` (``_hello``, ``_talk``, ``_next_request``,
  ``_build_request``, ``_take_reply``, ``_forget_run`` on RESET, QUIT,
  ``_farewell``), its real ``LazyPirateClient.ask`` on a simulated socket
  (a timeout opens ``<request_id>.<N+1>`` and resends the same request),
  its real ``WorkerPool`` bookkeeping (``add``, ``take_report``,
  ``take_acks``, ``give_back``, ``waiting``, ``forget``, ``_run`` with its
  failure records) and ``HeartbeatThread._answer`` for RECALL -> GIVEBACK
  (``slave``);
* every message both ways is built and parsed by ``taskmaster.protocol``.

What is modelled instead, and why:

* ZeroMQ (``network``): the sockets are in memory; their delivery rules
  (in order per connection, lost when sent to a closed one) are kept and
  the faults added on top.  Only messages that get no answer are
  duplicated: two answers on one connection would shift every later answer
  by one, which no real socket does (a duplicate request is a Lazy Pirate
  retry, which the real client sends itself).
* The pool's worker greenlets and the liveness thread wait on gevent's hub
  and an OS thread, whose time is real: here a worker is an event that
  claims one job under the pool's claim lock as ``WorkerPool._work`` does
  and calls the real ``_run`` when its simulated duration is over; the
  liveness loop beats every ``interval`` (at once for a new run).
* Inside the simulation only (``scheduler.simulated``): ``time.monotonic``
  and ``time.perf_counter`` read the simulated clock; ``gevent.sleep`` in
  master, slave and source waits on it; ``os.fsync`` is skipped (no machine
  crashes here, and the files are real); ``os.getpid``, ``uuid.uuid4`` and
  ``secrets.token_hex`` are fixed by the seed (run ids, tokens and pids
  appear in the messages, and a replay must be exact); the Lazy Pirate
  client looks at its socket every 10 ms while jobs run, not every 1 ms
  (each look is an event; the simulated jobs take milliseconds).
* tm-ctl is a message on the simulated network; a supervisor starts a new
  slave process (a new slave id) when one exits or is killed.
* In a quarter of the seeds the master forgets a lost slave after 2 leases,
  not ``registry.FORGET_AFTER_LEASES`` (10), and jobs take ten times as
  long: a slave cut off that long then comes back, within a short run, to a
  master that no longer knows it - RESET in the same run, and a rejoin.

``--job-timeout``: the real ``WorkerPool._run_with_timeout`` runs around
each handler, with gevent.Timeout replaced by ``scheduler.SimTimeout``: a
handler whose simulated duration passes the timeout raises the pool's own
JobTimeout itself, where gevent would raise it at the handler's next yield
(some handlers catch every Exception, as user code does).  The watchdog's
signal, for a handler that never yields, is not simulated; neither are a
slave's own SIGTERM, CURVE, ``--retry-failed``, disk errors or
unpicklable jobs.  ``pool.forget()`` leaving ``batch.dirty`` set runs for
real on every RESET, but what it costs - finished jobs of the old
incarnation never acknowledged, so they run again elsewhere - breaks no
invariant checked here (a job may run twice; handlers are idempotent), so
it goes unseen.
"""
