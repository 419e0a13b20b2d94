"""The commands: tm-master, tm-slave, tm-spawn and tm-run."""
