import pytest

from pipeline.loopback import LoopbackServer


@pytest.fixture
def site():
    """The allowed server, on 127.0.0.1."""
    with LoopbackServer("127.0.0.1") as server:
        yield server


@pytest.fixture
def other():
    """A server on 127.0.0.2, outside the tests' policy (127.0.0.1/32): it must get no request."""
    with LoopbackServer("127.0.0.2") as server:
        server.text("/", "should never be served")
        server.text("/x", "should never be served")
        yield server
