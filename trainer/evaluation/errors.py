"""The one error type of evaluation: bad input reported as one line, never a traceback."""


class EvalError(ValueError):
    pass
