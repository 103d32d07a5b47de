"""The dev supervisor: its backoff, the Procfile, and a real child restarted and stopped."""

import re
import signal
import sys
import time
from pathlib import Path
from threading import Thread

import pytest

from workers.supervisor import Backoff, Supervisor, describe_exit, read_procfile

ROOT = Path(__file__).parents[2]


def test_the_delay_doubles_with_each_quick_death_up_to_the_cap() -> None:
    backoff = Backoff(first=1, factor=2, cap=30)
    assert [backoff.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]


@pytest.mark.parametrize(("deaths", "uptime", "after"), [
    (0, 0.5, 1),      # the first death
    (3, 0.5, 4),      # another quick one: the count grows
    (3, 59.9, 4),     # just short of the reset
    (5, 60.0, 1),     # up a while: forgiven, counted as a first death again
], ids=["first", "quick", "almost-reset", "reset"])
def test_a_process_that_stayed_up_a_while_starts_over(deaths: int, uptime: float,
                                                      after: int) -> None:
    assert Backoff(reset_after=60).deaths_after(deaths, uptime) == after


def test_the_projects_procfile_names_every_process() -> None:
    processes = read_procfile(ROOT / "Procfile")
    assert list(processes) == ["api", "llm", "tools", "memory", "flow", "callbacks", "flower",
                               "sweeper"]
    assert processes["tools"] == ["orchestrator", "worker", "--pool", "tools"]


def test_a_procfile_line_without_a_command_is_refused(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("# the stack\n\napi: orchestrator api\nbroken\n")
    with pytest.raises(ValueError, match="Procfile:4: write it as `name: command`"):
        read_procfile(procfile)


@pytest.mark.parametrize(("code", "said"), [
    (-signal.SIGKILL, "killed by SIGKILL"), (-signal.SIGTERM, "killed by SIGTERM"),
    (1, "exit code 1"), (0, "exit code 0")])
def test_an_exit_is_told_by_signal_or_code(code: int, said: str) -> None:
    assert describe_exit(code) == said


def test_a_dying_child_is_restarted_and_ctrl_c_stops_the_rest(tmp_path: Path) -> None:
    # Given a child that dies at once and one that ignores SIGTERM
    lines: list[str] = []
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    supervisor = Supervisor({"dies": [sys.executable, "-c", "raise SystemExit(3)"],
                             "stays": [sys.executable, "-c", stubborn]}, env={},
                            backoff=Backoff(first=0.2, cap=0.4), grace=0.5, say=lines.append)
    # When it runs until the first has died three times, then is told to stop
    def stop_after_three_deaths() -> None:
        deadline = time.monotonic() + 20
        while sum(" died: " in line for line in lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        supervisor.stop()

    Thread(target=stop_after_three_deaths, daemon=True).start()
    supervisor.run()
    # Then the dying one was restarted with growing, capped delays, each death said in a line
    dies, stays = supervisor.children
    deaths = [line for line in lines if line.startswith("dies (pid")]
    assert len(dies.pids) >= 3 and len(set(dies.pids)) == len(dies.pids)
    assert "died: exit code 3 after" in deaths[0] and deaths[0].endswith("restarting in 0.2s")
    assert deaths[1].endswith("restarting in 0.4s") and deaths[2].endswith("restarting in 0.4s")
    assert f"dies restarted (pid {dies.pids[1]})" in lines
    # And the other ran throughout, then was killed once the grace ran out
    assert len(stays.pids) == 1 and stays.popen is not None
    assert stays.popen.returncode == -signal.SIGKILL
    assert re.fullmatch(r"stopping [12] process(es)? \(SIGTERM; SIGKILL after 0.5s\)", lines[-1])


def test_a_command_that_cannot_start_is_tried_again_with_backoff() -> None:
    lines: list[str] = []
    supervisor = Supervisor({"typo": ["/nonexistent/orchestrator", "api"]}, env={},
                            backoff=Backoff(first=0.1, cap=0.2), say=lines.append)

    def stop_after_three_tries() -> None:
        deadline = time.monotonic() + 20
        while len(lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        supervisor.stop()

    Thread(target=stop_after_three_tries, daemon=True).start()
    supervisor.run()
    assert lines[0].startswith("typo could not start ([Errno 2] No such file or directory")
    assert [line.rsplit(" ", 1)[-1] for line in lines[:3]] == ["0.1s", "0.2s", "0.2s"]


def test_with_a_log_dir_output_goes_to_a_file_and_starts_are_only_noted(tmp_path: Path) -> None:
    # Given a supervisor that keeps its processes' output in files
    said: list[str] = []
    noted: list[str] = []
    talker = "import sys; print('hello from the child'); sys.stdout.flush()"
    supervisor = Supervisor({"talker": [sys.executable, "-c", talker + "; import time; "
                                        "time.sleep(30)"]}, env={}, grace=0.5,
                            say=said.append, note=noted.append, log_dir=tmp_path / "log")
    log = tmp_path / "log" / "talker.log"

    def stop_once_it_spoke() -> None:
        deadline = time.monotonic() + 20
        while not (log.exists() and "hello" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        supervisor.stop()

    Thread(target=stop_once_it_spoke, daemon=True).start()
    # When it runs the process, then stops
    supervisor.run()
    # Then the output is in the process's file, its start a note, and only the stop is said
    assert log.read_text() == "hello from the child\n"
    assert noted == [f"talker started (pid {supervisor.children[0].pids[0]})"]
    assert len(said) == 1 and said[0].startswith("stopping 1 process ")
