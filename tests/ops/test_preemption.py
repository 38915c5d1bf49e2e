"""Stop-signal flag and its config check (the end-to-end behaviour: tests/ops/test_signals.py)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from clap_train.training.preemption import StopFlag, parse_signals


def _deliver(signum: signal.Signals) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # Python runs the handler in the main thread at the next bytecode


def test_parse_signals_names_the_field():
    assert parse_signals(["SIGTERM", "int", "USR1"], "f") == [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1]
    assert parse_signals([], "f") == []
    with pytest.raises(ValueError, match="callbacks.last.stop_signals: 'SIGKILL' is not one of"):
        parse_signals(["SIGKILL"], "callbacks.last.stop_signals")


def test_first_signal_is_kept_and_a_second_ctrl_c_interrupts():
    before = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGINT)
    flag = StopFlag([signal.SIGUSR1, signal.SIGINT])
    flag.install()
    try:
        _deliver(signal.SIGUSR1)
        assert flag.received == signal.SIGUSR1
        _deliver(signal.SIGINT)  # recorded already: the flag keeps the first; Ctrl-C is armed to interrupt
        assert flag.received == signal.SIGUSR1
        with pytest.raises(KeyboardInterrupt):
            _deliver(signal.SIGINT)
    finally:
        flag.restore()
    assert (signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGINT)) == before
