"""A real process under test (``lossless run``, a gRPC app...), in its own process group, with
its JSON log events parsed from stderr; always stopped at teardown, its child group included."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import parse_events

ROOT = Path(__file__).resolve().parent.parent.parent


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOSSLESS_")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Proc:
    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(env),
            start_new_session=True,
            text=True,
        )
        self.lines: list[str] = []
        self.out: list[str] = []
        self.exited_at: float | None = None
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._wait, daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line.rstrip("\n"))

    def _wait(self) -> None:
        self.proc.wait()
        self.exited_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> list[dict[str, object]]:
        return parse_events(self.lines)

    def event(self, name: str) -> dict[str, object] | None:
        return next((e for e in self.events() if e["event"] == name), None)

    def wait_event(self, name: str, timeout: float = 10.0) -> dict[str, object]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = self.event(name)
            if found is not None:
                return found
            if self.proc.poll() is not None and self.event(name) is None:
                self._threads[0].join(5)  # stderr read to its end (EOF), not a guessed 0.1 s
                found = self.event(name)
                if found is not None:
                    return found
                raise AssertionError(f"exited without event {name!r}:\n{self.stderr()}")
            time.sleep(0.02)
        raise AssertionError(f"no event {name!r} in {timeout} s:\n{self.stderr()}")

    def wait_output(self, text: str, timeout: float = 10.0) -> None:
        """Wait until a line of stdout contains ``text``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in line for line in list(self.out)):
                return
            time.sleep(0.02)
        raise AssertionError(f"no output {text!r} in {timeout} s:\n{self.stderr()}")

    def signal(self, sig: int = signal.SIGTERM) -> float:
        os.kill(self.proc.pid, sig)
        return time.monotonic()

    def wait_exit(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return code

    def stderr(self) -> str:
        return "\n".join(self.lines[-40:])

    def child_pgid(self) -> int | None:
        started = self.event("child_started")
        return None if started is None else int(str(started["child"]))

    def kill(self) -> None:
        """Stop it like an impatient operator (three SIGTERMs), then SIGKILL what is left."""
        if self.proc.poll() is None:
            for _ in range(3):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGTERM)
                time.sleep(0.05)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for group in (self.child_pgid(), self.proc.pid):
            if group is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        for t in self._threads:
            t.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def lossless(*args: str) -> list[str]:
    return [sys.executable, "-m", "lossless", *args]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] == "Z":
            found.append(int(entry))
    return found


@pytest.fixture
def spawn() -> Iterator[Callable[..., Proc]]:
    """Start processes that are always stopped (with their child groups) at teardown. Shared by
    the supervise, admin and grpc tests (their conftests import it)."""
    started: list[Proc] = []

    def start(argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(argv, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
