"""--rate, --max-failures and tm-ctl's arguments, in-process through each command's ``main(argv)``.

Bad input is one line on stderr naming the command, what is wrong and how
to fix it, exit code 2, before anything is read, written or started.
"""

from __future__ import annotations

import pytest

from taskmaster.cli import ctl, master, run

MAINS = {"master": master.main, "run": run.main, "ctl": ctl.main}


def refused(capsys, command: str, argv: list[str], *fragments: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        MAINS[command](argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tm-{command}: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobs.py").write_text("def get_jobs(last=0):\n    yield 1\n\ndef handle_job(i):\n    pass\n")
    yield tmp_path
    assert [p.name for p in tmp_path.iterdir()] == ["jobs.py"], "a refused command wrote files"


def before(command: str) -> list[str]:
    return ["jobs.py", "--no-progress"] if command == "master" else ["jobs.py", "2", "--no-progress"]


@pytest.mark.parametrize("command", ["master", "run"])
@pytest.mark.parametrize(
    "value, fragments",
    [
        ("5x", ["'5x' is neither a number of jobs (e.g. 100) nor a percentage below 100 (e.g. 5%)"]),
        ("100%", ["'100%'", "percentage below 100"]),
        ("-1", ["'-1'"]),
        ("2.5", ["'2.5'"]),
        ("", ["''"]),
    ],
)
def test_bad_max_failures(capsys, workdir, command, value, fragments):
    refused(capsys, command, [*before(command), "--max-failures", value], "--max-failures", *fragments)


@pytest.mark.parametrize("command", ["master", "run"])
@pytest.mark.parametrize(
    "value, fragment",
    [("0", "'0' is not a positive number"), ("-5", "'-5'"), ("fast", "'fast' is not a positive number"),
     ("inf", "'inf'"), ("nan", "'nan'"), ("2e12", "more than 1e+12 jobs a second")],
)  # fmt: skip
def test_bad_rate(capsys, workdir, command, value, fragment):
    refused(capsys, command, [*before(command), "--rate", value], "--rate", fragment)


@pytest.mark.parametrize(
    "argv, fragments",
    [
        ([], ["the following arguments are required: COMMAND"]),
        (["rate"], ["rate needs a value: rate N (jobs a second) or rate off"]),
        (["rate", "0"], ["rate: '0' is not a positive number", "rate off"]),
        (["rate", "-3"], ["'-3'", "rate off"]),
        (["rate", "quick"], ["'quick'"]),
        (["pause", "now"], ["pause takes no value (got 'now')"]),
        (["stop", "5"], ["stop takes no value"]),
        (["halt"], ["invalid choice: 'halt'"]),
        (["--address", "127.0.0.1:3050", "pause"], ["is not an address", "tcp://HOST:PORT"]),
        (["--timeout", "0", "pause"], ["'0' is not a positive integer"]),
    ],
)
def test_bad_tm_ctl_arguments(capsys, workdir, argv, fragments):
    line = refused(capsys, "ctl", argv, *fragments)
    assert line.endswith("(see tm-ctl --help)"), line


def test_good_values_parse():
    args, rate = ctl.parse(["rate", "2.5e3"], "tm-ctl")
    assert (args.command, rate) == ("rate", 2500.0)
    assert ctl.parse(["rate", "off"], "tm-ctl")[1] is None
    parsed = master.build_parser().parse_args(["jobs.py", "--rate", "200", "--max-failures", "5%"])
    assert parsed.rate == 200.0 and str(parsed.max_failures) == "5%"
    parsed = master.build_parser().parse_args(["jobs.py"])
    assert parsed.rate is None and parsed.max_failures is None  # no limit, never halt: the defaults
