"""`serve stop` returns only once the frontend is gone, also when it had to be killed: a restart
right after a kill found its port still taken."""

from __future__ import annotations

import signal

from forgeml.serving import server as server_module
from forgeml.serving.server import TorchServe


class Frontend:
    """A frontend that ignores SIGTERM and is still there at the first poll after SIGKILL."""

    def __init__(self, polls_to_exit: int):
        self.signals: list[int] = []
        self.polls_to_exit = polls_to_exit

    def kill(self, pid: int, sig: int) -> None:
        self.signals.append(sig)

    def alive(self, pid: int) -> bool:
        if signal.SIGKILL not in self.signals:
            return True
        self.polls_to_exit -= 1
        return self.polls_to_exit >= 0


def test_stop_waits_for_a_killed_frontend_to_exit(make_config, monkeypatch):
    frontend = Frontend(polls_to_exit=1)
    monkeypatch.setattr(TorchServe, "pid", lambda self: 4242)
    monkeypatch.setattr(server_module, "descendants", lambda pid: [])
    monkeypatch.setattr(server_module, "process_alive", frontend.alive)
    monkeypatch.setattr(server_module.os, "kill", frontend.kill)
    monkeypatch.setattr(server_module, "STOP_TIMEOUT", 0.5)
    assert TorchServe(make_config().serve).stop()
    assert frontend.signals == [signal.SIGTERM, signal.SIGKILL]
    assert frontend.polls_to_exit < 0


def test_stop_waits_until_the_servers_ports_are_released(make_config, monkeypatch):
    frontend = Frontend(polls_to_exit=0)
    frontend.signals.append(signal.SIGKILL)  # gone at the first poll
    answers = iter([False, False, True])
    monkeypatch.setattr(TorchServe, "pid", lambda self: 4242)
    monkeypatch.setattr(server_module, "descendants", lambda pid: [])
    monkeypatch.setattr(server_module, "process_alive", frontend.alive)
    monkeypatch.setattr(server_module.os, "kill", frontend.kill)
    monkeypatch.setattr(TorchServe, "ports_free", lambda self: next(answers))
    assert TorchServe(make_config().serve).stop()
    assert next(answers, "released") == "released"
