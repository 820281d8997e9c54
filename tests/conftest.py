import os

import pytest

# img2dataset imports albumentations, which otherwise asks the network for updates at import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture
def test_site():
    """The loopback test site (127.0.0.1) and the server it redirects to (127.0.0.2)."""
    from pipeline.testing.site import start_site

    site, external = start_site()
    yield site, external
    site.close()
    external.close()
