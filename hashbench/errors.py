"""User-facing errors.

Every error a user can cause (bad option, bad file, bad plugin output) is raised as a
``HashbenchError`` whose message is one line that says what is wrong and, where
possible, how to fix it. The CLI prints ``error: <message>`` and exits non-zero;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class HashbenchError(Exception):
    """Base class: a problem the user can fix, with a one-line message."""

    exit_code = 1


class UsageError(HashbenchError):
    """Bad command-line input: unknown names, malformed lists (exit code 2)."""

    exit_code = 2


class ConfigError(HashbenchError):
    """A protocol file or method parameter that does not validate."""

    exit_code = 2


class DataError(HashbenchError):
    """Missing, unreadable or corrupt dataset or code files, NaN features, shape mismatches."""


class StoreError(HashbenchError):
    """The MLflow store cannot be created, opened or written: a file in the way, no write
    permission, a full disk. Nothing recorded so far is lost; a trial left RUNNING by it is
    closed KILLED by the next run (its process is gone)."""


class CodeContractError(HashbenchError):
    """A method (often a plugin) broke the code contract: shape, dtype or values."""


class MethodDefinitionError(HashbenchError, ValueError):
    """A method class whose definition breaks the contract (metadata, ``__init__``), found
    when it is registered."""

    exit_code = 2


class ConformanceError(HashbenchError, AssertionError):
    """A method failed a conformance check (``hashbench check``); raised as a real exception,
    so ``python -O`` cannot skip it."""


class DivergedError(HashbenchError):
    """Training diverged (a non-finite loss): the trial is FAILED, not recorded as a result."""


class NotFittedError(HashbenchError):
    """``encode`` or ``database_codes`` was called before ``fit``."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C: the running trial is marked KILLED and the CLI
    exits with 128 + the signal number (143, 129)."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(name)
        self.signum, self.name = signum, name
        self.exit_code = 128 + signum


_OS_PROBLEMS = {
    errno.ENOSPC: "no space left on the device (the disk is full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a file is in the way of a folder",
    errno.EEXIST: "a file is in the way",
    errno.EISDIR: "is a folder, not a file",
    errno.EFBIG: "file too large (a file-size limit)",
}


def os_error_line(exc: OSError, doing: str = "") -> str:
    """One line for an operating-system error: what was being done, the path, the problem."""
    problem = _OS_PROBLEMS.get(exc.errno or 0) or exc.strerror or type(exc).__name__
    path = exc.filename if exc.filename is not None else ""
    return " ".join(x for x in (doing, str(path)) if x) + f": {problem}" if doing or path else problem


def interruption_name(exc: BaseException) -> str:
    """What interrupted the run, for the KILLED run's error tag."""
    return f"interrupted ({exc.name})" if isinstance(exc, Interrupted) else "interrupted (Ctrl-C)"


def positive_int_env(name: str) -> int | None:
    """The value of environment variable ``name`` as a positive integer, None when unset."""
    import os

    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}")
    return value
