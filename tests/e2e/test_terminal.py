"""What a person at a terminal sees: the master's drawn bar under a real pseudo-terminal, NO_COLOR, TERM=dumb."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import termios
import threading

import pytest
from conftest import tcp_address, tm, write_module

COUNTED = """
import os, time

def get_jobs(last=0, n="400", **kwargs):
    yield from range(int(last), int(n))

def count_jobs(n="400", **kwargs):
    return int(n)

def handle_job(i):
    time.sleep(float(os.environ.get("TM_DELAY", "0.02")))
"""

COLOUR = re.compile(r"\x1b\[[0-9;]*m")


class Terminal:
    """A pseudo-terminal, 100 columns wide, whose output is read as it comes."""

    def __init__(self) -> None:
        self.master_fd, self.slave_fd = pty.openpty()
        fcntl.ioctl(self.slave_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master_fd, 65536)
            except OSError:  # EIO: every writer closed its end
                return
            if not data:
                return
            self.chunks.append(data)

    def start(self, procs, argv: list[str], env: dict):
        return procs.start(argv, env=env, stdout=self.slave_fd, stderr=self.slave_fd)

    def close_writer(self) -> None:
        os.close(self.slave_fd)

    def text(self) -> str:
        """Everything written, once every writer is gone (the reader saw the end)."""
        self.reader.join(timeout=10)
        if not self.reader.is_alive():
            os.close(self.master_fd)
            self.master_fd = -1
        return b"".join(self.chunks).decode(errors="replace")


def run_master_on_a_terminal(procs, tmp_path, env: dict, n: int = 400, concurrency: int = 4) -> str:
    module = write_module(tmp_path, "counted", COUNTED)
    address = tcp_address()
    terminal = Terminal()
    env = {"TERM": "xterm-256color", **env}
    master = terminal.start(procs, tm("master", module, f"n={n}", "--address", address), env)
    terminal.close_writer()  # ours: the reader sees the end when the master's is closed too
    slave = procs.start(
        tm("slave", module, "--address", address, "--no-progress", "--concurrency", concurrency), env=env
    )
    assert master.wait(timeout=120) == 0
    slave.communicate(timeout=30)
    return terminal.text()


BAR = re.compile(r"(\d+)% \|(#*) *\| (\d+)/400 \| +[\d.]+ jobs/s \| ETA: +(\d+:\d\d:\d\d)")


@pytest.mark.timeout(150)
def test_a_known_total_draws_a_bar_with_percent_rate_and_eta(procs, tmp_path):
    out = run_master_on_a_terminal(procs, tmp_path, {})
    frames = [m for m in BAR.finditer(COLOUR.sub("", out))]
    assert len(frames) >= 2, out[-2000:]
    percents = [int(m.group(1)) for m in frames]
    assert percents == sorted(percents) and percents[-1] == 100
    assert any(0 < p < 100 for p in percents), percents  # drawn while running, not only at the end
    for m in frames:
        assert abs(int(m.group(1)) - 100 * int(m.group(3)) / 400) < 1.0  # the percent is of the jobs done
    # the bar grows: more # for more done
    widths = [len(m.group(2)) for m in frames]
    assert widths == sorted(widths) and widths[-1] > widths[0]
    assert "\r" in out  # redrawn in place
    assert "400 finished, 0 failed" in out


@pytest.mark.timeout(150)
def test_no_color_draws_the_bar_without_escape_sequences(procs, tmp_path):
    out = run_master_on_a_terminal(procs, tmp_path, {"NO_COLOR": "1"})
    assert "\x1b" not in out, repr(out[-1000:])
    assert BAR.search(out) and "100% |" in out


@pytest.mark.timeout(150)
def test_term_dumb_gets_plain_periodic_lines(procs, tmp_path):
    """No bar, no escape sequence, no carriage return redraws: log lines every few seconds."""
    out = run_master_on_a_terminal(procs, tmp_path, {"TERM": "dumb", "TM_DELAY": "0.1"}, n=500, concurrency=4)
    assert "\x1b" not in out, repr(out[-1000:])
    assert not re.search(r"\r(?!\n)", out), "a carriage return that is not a line end (the pty adds \\r\\n)"
    assert re.search(r"master: completed \d+ \([\d.]+%\) \| in queue .* \| eta \d+:\d\d:\d\d", out), out[-2000:]
    assert "500 finished, 0 failed" in out
