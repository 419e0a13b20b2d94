"""The master: the job source, the ledger of every job's fate, and the loop that serves slaves.

The modules import one way, top to bottom (pyproject.toml's second layers
contract, checked by lint-imports): ``process`` runs a ``core.Master`` as a
real process (its socket, filler greenlet, signals and loop) and serves
``metrics`` (/metrics); ``core`` handles each message and tick, helped by
``dispatch`` (hand-out and parking), ``reports`` (acknowledgements and
failures), ``control`` (tm-ctl and --max-failures), ``admission`` (which
connections may speak for a slave), ``status`` (what tm-status shows, read
from a ``RunView``) and ``start`` (afresh, resume or replay).  The state
beneath: ``registry`` (slaves and their leases; the one module that writes a
slave's record), ``source`` (the user's
iterator), ``shutdown``/``outcome`` (how a run ends), ``pace`` (paused, the
rate limit, halted: one owner), ``checkpoint``, ``failures_file``,
``endpoint`` (the socket); under those ``ledger`` (every job's fate),
``connections``, ``window`` (--size), and ``identity`` (resume
fingerprints).  Nothing here imports the slave package.

A REQUEST's path, each step calling down, none back up:

1. frames: ``process`` receives them from the ``endpoint`` and calls
   ``Master.handle(frames, now)``;
2. decode: ``wire.protocol.decode_from_slave`` validates the JSON (nothing a
   slave sends is unpickled); a malformed message is counted and refused;
3. admit: ``admission.TokenBinding.admit`` - this run, the slave's token,
   the connection it came from (the one check of every message that carries
   a token); a refused REQUEST gets RESET;
4. settle: ``registry.requested`` notes the connection, the request's number
   (the same request again: the batch of the lost answer goes back) and the
   jobs not started; ``reports.Reports.take_back`` requeues the jobs given
   back (refunded to the ``pace``), ``Reports.record`` resolves the
   acknowledged jobs in the ``ledger`` and settles batches in the
   ``registry``;
5. record failures: ``Reports.record`` too - retried, or written to the
   failures file (``failures_file``); it returns ``Findings`` (malformed
   parts, a disk error, whether there were failures) and the core acts on
   them: counts the bad parts, stops for a disk error, asks
   ``control.Controls.check_failures`` (--max-failures), which changes the
   ``pace`` and returns a ``Due`` (stop the run) that the core carries out;
   while paused or halted ``Controls.on_news`` recalls the slave again;
6. hand out: ``dispatch.Dispatcher.answer`` - a batch sized by the window, as
   the ``pace`` allows, or the request is parked (a recall may go to the
   slave with the largest backlog); a BYE is answered QUIT instead;
7. reply: JOBS, NO_JOBS or QUIT through the endpoint's send, at once or
   when a parked request is served (``Master.tick``).

The modules import nothing from this package's ``__init__``, which stays
empty so that importing one of them (tm-status imports ``status``) does not
import gevent or zmq.
"""
