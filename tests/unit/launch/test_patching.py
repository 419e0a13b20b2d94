"""gevent's plugins are looked up from the metadata files, without importlib.metadata (taskmaster.patching)."""

from __future__ import annotations

import subprocess
import sys

from taskmaster.launch import patching

OWN = ("gevent.plugins.monkey.will_patch_all", "gevent.monkey:_subscribe_signal_os")


def dist(directory, name: str, entry_points: str | None) -> None:
    info = directory / f"{name}.dist-info"
    info.mkdir()
    if entry_points is not None:
        (info / "entry_points.txt").write_text(entry_points)


def test_this_environment_declares_gevents_own_plugin_only():
    # The fast path of monkey_patch: the test extras install no gevent plugin.
    assert patching._declared_plugins() == {OWN}


def test_another_distributions_plugin_is_found(tmp_path, monkeypatch):
    dist(tmp_path, "gevent-1.0", f"[{OWN[0]}]\nsignal_os_incompat = {OWN[1]}\n")
    dist(tmp_path, "noentry-1.0", None)
    dist(tmp_path, "console-1.0", "[console_scripts]\nx = x:main\n")
    plugin = "[console_scripts]\ny = y:main\n\n[gevent.plugins.monkey.did_patch_all]\nmine = plugin.hooks:after\n"
    dist(tmp_path, "plugin-2.0", plugin)
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert patching._declared_plugins() == {OWN, ("gevent.plugins.monkey.did_patch_all", "plugin.hooks:after")}


def test_a_zip_on_the_path_is_an_unknown(tmp_path, monkeypatch):
    archive = tmp_path / "deps.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))
    monkeypatch.setattr(sys, "path", [str(archive)])
    assert not patching._declared_plugins() <= {OWN}


def test_strptimes_cache_lock_stays_a_real_lock_and_everything_else_is_patched():
    # In a child: patching this test process would patch pytest.
    code = """
import subprocess
import sys
from taskmaster.launch import patching
patching.monkey_patch(False)
import _strptime, datetime, threading, gevent
from gevent import monkey
real_lock = type(monkey.get_original("_thread", "allocate_lock")())
days = gevent.joinall([gevent.spawn(datetime.datetime.strptime, f"{d}/12/2015", "%d/%m/%Y") for d in range(1, 29)])
print(type(_strptime._cache_lock) is real_lock, type(threading.Lock()) is real_lock,
      monkey.is_module_patched("threading"), sorted(g.value.day for g in days) == list(range(1, 29)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "True", "True"]
