"""Starting a run's processes: ``taskmaster.run`` (``local``), forking children (``fork``),
supervising them (``supervisor``, ``child``), gevent's patching (``patching``) and loading the user's
module (``target``).

Below the commands (``taskmaster.cli``), above the master and the slave.
"""
