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

The modules import nothing from this package's ``__init__``, which stays
empty so that importing one of them (tm-status imports ``status``) does not
import gevent or zmq.
"""
