import os

import pytest

# img2dataset imports albumentations, which otherwise asks the network for updates at import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Every Ray runtime a test starts in this process, and this process as a driver of the tests'
# clusters, use 127.0.0.1 as their node address: never the machine's network interface.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture
def test_site():
    """The loopback test site (127.0.0.1) and the server it redirects to (127.0.0.2)."""
    from pipeline.testing.site import start_site

    site, external = start_site()
    yield site, external
    site.close()
    external.close()
