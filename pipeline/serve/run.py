"""`pipeline serve DIR`: check the binding, build the app, run uvicorn until interrupted."""

import ipaddress
import logging
import os

from manifests.config import ConfigError

log = logging.getLogger(__name__)
TOKEN_ENV = "PIPELINE_SERVE_TOKEN"
MIN_TOKEN = 16  # characters: a guessable token is no guard


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_binding(host: str, port: int, token: str | None) -> str | None:
    """The token to require (None: none), or a ConfigError for an unsafe or bad binding."""
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be from 1 to 65535, not {port}")
    if token is not None and len(token) < MIN_TOKEN:
        raise ConfigError(f"--token must be at least {MIN_TOKEN} characters long")
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"--host {host} is not a loopback address: anyone who reaches it could browse the "
            f"dataset; give --token (or set {TOKEN_ENV}) to bind there"
        )
    return token


def serve(root, host: str = "127.0.0.1", port: int = 8080, token: str | None = None) -> int:
    import uvicorn

    from pipeline.serve.app import create_app

    token = check_binding(host, port, token)
    app = create_app(root, token=token)
    shown = f"[{host}]" if ":" in host else host
    log.info("serving %s at http://%s:%d/%s", root, shown, port, " (token required)" * bool(token))
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
