"""The master: the job source, the ledger of every job's fate, and the loop that serves slaves.

``process`` runs a ``core.Master`` as a real process (its socket, filler
greenlet, signals and loop); ``core`` handles each message and tick,
helped by ``dispatch`` (hand-out and parking), ``reports`` (acknowledgements
and failures), ``control`` (tm-ctl), ``admission`` (which connections may
speak for a slave) and ``status``/``metrics`` (what tm-status and /metrics
show).  The state beneath: ``registry`` (slaves and their leases),
``ledger`` (every job's fate), ``source`` (the user's iterator),
``shutdown``/``outcome`` (how a run ends), ``pace`` (the rate limit),
``start`` (afresh, resume or replay), ``checkpoint``, ``failures_file``,
``identity`` (resume fingerprints), ``window`` (--size), ``endpoint`` and
``connections`` (the socket).  Nothing here imports the slave package.

A REQUEST's path, each step calling down, none back up:

1. frames: ``process`` receives them from the ``endpoint`` and calls
   ``Master.handle(frames, now)``;
2. decode: ``wire.protocol.decode_from_slave`` validates the JSON (nothing a
   slave sends is unpickled); a malformed message is counted and refused;
3. admit: ``admission.TokenBinding.admit`` - this run, the slave's token,
   the connection it came from (the one check of every message that carries
   a token); a refused REQUEST gets RESET;
4. settle: the jobs it gives back go back to the queue, its acknowledgements
   resolve jobs in the ``ledger`` and settle batches in the ``registry``
   (``reports.Reports``);
5. record failures: retried, or written to the failures file
   (``failures_file``); ``Findings`` tell the master what to act on
   (malformed parts, a disk error, --max-failures via ``control``);
6. hand out: ``dispatch.Dispatcher.answer`` - a batch sized by the window, as
   the ``pace`` allows, or the request is parked (a recall may go to the
   slave with the largest backlog);
7. reply: JOBS, NO_JOBS or QUIT through the endpoint's send, at once or
   when a parked request is served (``Master.tick``).

The modules import nothing from this package's ``__init__``, which stays
empty so that importing one of them (tm-status imports ``status``) does not
import gevent or zmq.
"""
