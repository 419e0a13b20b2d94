"""What crosses the network: the messages (``protocol``), CURVE keys (``security``, ``secretfile``),
job positions as ranges (``ranges``), and tm-status/tm-ctl's request (``query``).

Shared by the master, the slave and the commands; imports neither.
"""
