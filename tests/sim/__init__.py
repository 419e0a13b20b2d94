"""The deterministic simulation of a whole run (see README.rst, "How the guarantees are checked")."""
