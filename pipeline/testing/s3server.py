"""A real S3-protocol server on loopback for tests and benches: moto's server mode (the one
s3fs's and pyarrow's own test suites use), started as a child process and stopped after.
Nothing is mocked inside the process under test: it talks HTTP to the server as to any store."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EC2_METADATA_DISABLED",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """`with S3Server() as server:` a moto server on 127.0.0.1; `server.env` points the AWS
    chain at it (a fake key pair, the endpoint, no instance-metadata lookups)."""

    def __init__(self, port: int | None = None, cpu: int | None = None, open_actions=None):
        self.port = port or _free_port()
        self.cpu = cpu  # pin the server to one core (taskset), for benches
        # With open_actions=N the server checks credentials and IAM policies after its first N
        # requests (moto's INITIAL_NO_AUTH_ACTION_COUNT): to test refused keys and permissions.
        self.open_actions = open_actions
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254
        }

    def __enter__(self) -> S3Server:
        # This interpreter's own moto first: another one on PATH (a system install, when the
        # venv is not activated) may be an older release (5.2.1 fails multipart uploads).
        beside = os.path.join(os.path.dirname(sys.executable), "moto_server")
        binary = beside if os.access(beside, os.X_OK) else shutil.which("moto_server")
        if binary is None:
            raise RuntimeError("moto_server is not installed: pip install 'moto[server]'")
        command = [binary, "-H", "127.0.0.1", "-p", str(self.port)]
        if self.cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(self.cpu), *command]
        env = dict(os.environ)
        if self.open_actions is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self.open_actions)
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # bounded: the server answers or the test fails
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"moto_server did not start on port {self.port}")

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            if self.process.poll() is None:
                self.process.kill()
            self.process = None

    def create_bucket(self, name: str) -> str:
        """A new bucket; its s3:// URI."""
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        fs.create_dir(name)
        return f"s3://{name}"


@contextlib.contextmanager
def aws_env(env: dict[str, str]) -> Iterator[None]:
    """This process's AWS variables set to `env` (the others of ENV_KEYS unset), restored
    after; the filesystem cache is cleared both ways so clients see the change."""
    from manifests.storage import filesystem

    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    for key in ENV_KEYS:
        os.environ.pop(key, None)
    os.environ.update(env)
    filesystem.cache_clear()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        filesystem.cache_clear()


def user_without_permissions(server: S3Server, bucket: str) -> dict[str, str]:
    """On a server with `open_actions` >= 3: create `bucket` and an IAM user with no policy;
    the AWS variables of that user (its key is valid, it may do nothing)."""
    import boto3

    options = dict(
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    boto3.client("s3", **options).create_bucket(Bucket=bucket)
    iam = boto3.client("iam", **options)
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    return {
        **server.env,
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }
