"""Taskmaster: run huge numbers of one-off jobs from a resumable iterator.

A master pulls jobs from the user's ``get_jobs`` iterator into a bounded
buffer and serves them in batches over ZeroMQ to slaves that run the user's
``handle_job`` in gevent greenlet pools; a checkpoint lets an interrupted run
resume where it stopped.
"""

__version__ = "1.0.0"
