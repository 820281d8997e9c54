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


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on loopback for the whole session (started once, stopped after)."""
    from pipeline.testing.s3server import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server, request):
    """A fresh bucket on the loopback S3 server, with this process's AWS chain pointed at it;
    yields its s3:// URI."""
    import hashlib
    import re

    from pipeline.testing.s3server import aws_env

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") or "bucket"
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]  # unique per test
    with aws_env(s3_server.env):
        uri = s3_server.create_bucket(f"{name}-{digest}")
        yield uri
