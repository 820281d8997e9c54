"""The one error type of evaluation: bad input reported as one line, never a traceback.

A ConfigError (manifests.config), so anything that reports the project's user errors reports
these too, and eval-set errors (manifests.evalsets raises ConfigError) are caught alongside."""

from manifests.config import ConfigError


class EvalError(ConfigError):
    pass
