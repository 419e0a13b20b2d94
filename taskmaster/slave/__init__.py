"""The slave: ``core.Slave``'s request loop, its worker ``pool``, its ``heartbeat`` thread, its ``lazy_pirate`` socket.

Nothing here imports the master package: the two meet only in ``taskmaster.wire``.
"""
