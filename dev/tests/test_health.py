"""`wait_serving`: SERVING is covered by every stack the tests start; here the two ways out."""

from __future__ import annotations

import pytest

from breachmatch_dev.health import wait_serving
from breachmatch_dev.nats_server import free_port


def test_nothing_listening_is_false_at_the_deadline() -> None:
    assert wait_serving(free_port(), 0.5, lambda: None) is False


def test_a_dead_service_fails_at_once() -> None:
    class Died(Exception):
        pass

    def alive() -> None:
        raise Died

    with pytest.raises(Died):
        wait_serving(free_port(), 60.0, alive)
