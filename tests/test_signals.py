"""SIGINT and SIGTERM during a guarded loop: noted, not fatal; a second one stops at once; the
handlers in place before are put back."""

import os
import signal

import pytest

from mp_contrastive._signals import Interrupted, StopSignals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_is_noted_and_a_second_one_stops(signum):
    before = signal.getsignal(signum)
    with StopSignals() as stop:
        os.kill(os.getpid(), signum)
        assert stop.requested == signum  # the process goes on
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
    assert signal.getsignal(signum) is before


def test_interrupted_is_a_keyboard_interrupt_with_the_shell_status():
    stopped = Interrupted("stopped", signal.SIGTERM)
    assert isinstance(stopped, KeyboardInterrupt) and not isinstance(stopped, Exception)
    assert stopped.exit_status == 143 and Interrupted("x", signal.SIGINT).exit_status == 130
