"""`fedledger` never shows a traceback unless asked: one line on stderr and a non-zero status,
through a real `python -m fedledger` process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import refusing_port

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


def fedledger(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedledger", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "40", **(env or {})},  # narrow: no wrapping either
    )


def one_line_error(proc: subprocess.CompletedProcess[str], status: int) -> str:
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_config_that_is_a_directory(tmp_path: Path) -> None:
    line = one_line_error(fedledger("baseline", "--config", str(tmp_path), "--out", "x"), 2)
    assert str(tmp_path) in line


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe[task]\nnodes = 3\n")
    line = one_line_error(fedledger("run", "--config", str(bad), "--out", str(tmp_path)), 2)
    assert "bad.toml" in line


def test_missing_config(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    line = one_line_error(fedledger("audit", "--rpc", "http://127.0.0.1:1", "--task",
                                    "0x" + "11" * 20, "--config", str(missing)), 2)  # fmt: skip
    assert "missing.toml" in line


def test_node_config_that_is_missing(tmp_path: Path) -> None:
    one_line_error(fedledger("node", "--config", str(tmp_path / "node.toml")), 2)


def test_chain_nobody_listens_on(tmp_path: Path) -> None:
    with refusing_port() as port:  # held: no other process can start listening there
        url = f"http://127.0.0.1:{port}"
        proc = fedledger("run", "--config", str(DIGITS), "--out", str(tmp_path), "--nodes", "2",
                         "--rounds", "1", "--chain", url)  # fmt: skip
    line = one_line_error(proc, 2)
    assert url in line


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "ftp://x", "http://[::1"])
def test_chain_urls_that_are_not_urls(tmp_path: Path, url: str) -> None:
    proc = fedledger("run", "--config", str(DIGITS), "--out", str(tmp_path), "--nodes", "2",
                     "--rounds", "1", "--chain", url)  # fmt: skip
    one_line_error(proc, 2)


def test_brackets_in_a_message_are_printed_not_parsed_as_markup(tmp_path: Path) -> None:
    # Rich markup in the message ("[/x]") used to raise MarkupError from the error printer.
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}/[/x]"
        proc = fedledger("audit", "--rpc", url, "--task", "0x" + "11" * 20, "--config", str(DIGITS))
    assert "[/x]" in one_line_error(proc, 2)


def test_out_that_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "file"
    out.write_text("")
    for command in ("run", "baseline"):
        line = one_line_error(fedledger(command, "--config", str(DIGITS), "--out", str(out)), 2)
        assert "out:" in line


def test_deployer_key_on_the_command_line_is_refused(tmp_path: Path) -> None:
    proc = fedledger("run", "--config", str(DIGITS), "--out", str(tmp_path), "--chain",
                     "http://127.0.0.1:1", "--deployer-key", "0x" + "11" * 32)  # fmt: skip
    line = one_line_error(proc, 2)
    assert "FEDLEDGER_DEPLOYER_KEY" in line
    assert "--deployer-keyfile" in line
    assert "11" * 32 not in line


# An exception fedledger did not translate: the command is replaced in a real process, as a bug
# would be there (every real one found is fixed or translated, so none is left to trigger).
RAISE = textwrap.dedent(
    """
    import sys
    from fedledger import cli
    from fedledger.cli import audit as cli_audit

    def broken(args):
        raise {exc}

    cli_audit.cmd_audit = broken
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def run_broken(exc: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RAISE.format(exc=exc), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "40"},
    )


def test_unexpected_exception_is_one_line_with_its_type() -> None:
    proc = run_broken('ValueError("bad\\nthing [/x]")', "audit", "--run", ".")
    line = one_line_error(proc, 1)
    assert line == (
        "error: unexpected ValueError: bad thing [/x] (run with --debug for the traceback)"
    )


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(where: str) -> None:
    args = ["--debug", "audit", "--run", "."] if where == "before" else [
        "audit", "--run", ".", "--debug"]  # fmt: skip
    proc = run_broken('LookupError("gone")', *args)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert "in broken" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "error: unexpected LookupError: gone"


def test_fedledger_error_keeps_status_2_and_debug_adds_the_traceback() -> None:
    proc = run_broken('cli_audit.ConfigError("nope", field="x")', "audit", "--run", ".")
    assert one_line_error(proc, 2) == "error: x: nope"
    proc = run_broken('cli_audit.ConfigError("nope", field="x")', "--debug", "audit", "--run", ".")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_keyboard_interrupt_exits_130_quietly() -> None:
    proc = run_broken("KeyboardInterrupt", "audit", "--run", ".")
    assert proc.returncode == 130
    assert proc.stderr == ""


def test_chain_up_on_a_port_in_use() -> None:
    # Before: anvil failed to bind, the other process answered its readiness check, and the
    # command announced "anvil listening" and exited 0 once its own anvil had died.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(fedledger("chain", "up", "--port", str(port)), 2)
    assert f"127.0.0.1:{port} is in use" in line


def test_brackets_in_a_task_name_and_a_path_are_printed(tmp_path: Path) -> None:
    # A task named "d[/x]" made the progress header raise MarkupError (status 1).
    task = tmp_path / "task.toml"
    task.write_text(DIGITS.read_text().replace('name = "digits"', 'name = "d[/x]"', 1))
    out = tmp_path / "out[/y]"
    proc = fedledger("run", "--config", str(task), "--out", str(out), "--rounds", "1", "--nodes",
                     "2", "--transport", "memory", "--chain", "none")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "d[/x]" in proc.stderr
    assert (out / "report.json").exists()


@pytest.mark.parametrize(
    ("policy", "option", "expected"),
    [
        ('[consent]\nrules = ["nope"]\n', "1=POLICY", "consent.rules: unknown value 'nope'"),
        ('[consent]\nmax_rounds = "x"\n', "1=POLICY", "consent.max_rounds: must be an integer"),
        ("rules = []\n", "1=POLICY", "must hold one [consent] table"),
        ('[consent]\nrules = ["fedavg"]\n', "7=POLICY", "INDEX in 0..1"),
        ('[consent]\nrules = ["fedavg"]\n', "POLICY", "not INDEX=FILE"),
    ],
)
def test_bad_consent_policies(tmp_path: Path, policy: str, option: str, expected: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(policy)
    consent = option.replace("POLICY", str(path))
    proc = fedledger("run", "--config", str(DIGITS), "--out", str(tmp_path / "out"), "--nodes",
                     "2", "--rounds", "1", "--consent", consent)  # fmt: skip
    assert expected in one_line_error(proc, 2)


@pytest.mark.slow
def test_a_second_run_into_the_same_directory_is_refused_or_replaces_the_first(
    tmp_path: Path,
) -> None:
    """A new embedded chain has the old one's addresses: the old run's nodes took their saved
    state for the new run's and stopped at once ("no round produced a model"). A directory
    holding a run is now refused, or replaced with --overwrite (the user's own files stay)."""
    out = tmp_path / "run"
    args = ("run", "--config", str(DIGITS), "--out", str(out), "--rounds", "1", "--nodes", "3",
            "--transport", "memory", "--chain", "embedded", "--no-audit")  # fmt: skip
    first = fedledger(*args)
    assert first.returncode == 0, first.stderr
    (out / "notes.txt").write_text("mine")
    line = one_line_error(fedledger(*args), 2)
    assert "holds a previous run" in line
    assert "--overwrite" in line
    again = fedledger(*args, "--overwrite")
    assert again.returncode == 0, again.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["final"]["rounds_completed"] == 1
    assert report["final"]["rounds_finalized"] == 1
    assert (out / "notes.txt").read_text() == "mine"
