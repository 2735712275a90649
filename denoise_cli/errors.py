"""Errors by kind.

- ``ConfigError``: the configuration (mixture, lengths, tokenizer, options) is unusable. Raised
  before any work starts.
- ``InputError``: a record or file of the input is bad. Under ``--on-error skip`` (the default)
  these are counted per file and reason and never raised; under ``--on-error fail`` the first one
  is raised, naming the file and position.
- ``OutputError``: the output directory cannot be used (locked, from another config, unwritable).
- ``VerifyError``: ``denoise verify`` found a problem in an output.

Only the CLI turns these into exit codes and messages.
"""

from __future__ import annotations


class DenoiseError(Exception):
    """Base class for all errors this package raises on purpose."""

    exit_code = 1


class ConfigError(DenoiseError):
    exit_code = 2


class InputError(DenoiseError):
    """A bad input record or file.

    ``path`` names the file, ``position`` says where (``line N`` or ``byte offset N``),
    ``reason`` is the short counter key used in the manifest (e.g. ``malformed_json``).
    """

    exit_code = 3

    def __init__(self, path: str, position: str, reason: str, detail: str = "") -> None:
        self.path = path
        self.position = position
        self.reason = reason
        self.detail = detail
        msg = f"{path}: {position}: {reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str, str, str]]:
        # exceptions cross process boundaries (worker -> main) by pickling
        return (InputError, (self.path, self.position, self.reason, self.detail))


class OutputError(DenoiseError):
    exit_code = 4


class VerifyError(DenoiseError):
    exit_code = 5


class WorkerError(DenoiseError):
    """A worker process died (killed, out of memory). Rerunning resumes the work."""

    exit_code = 6


class Interrupted(DenoiseError):
    """SIGINT/SIGTERM/SIGHUP stopped the run; what was committed is kept. The exit code is the
    shell's: 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum

    def __reduce__(self) -> tuple[type[Interrupted], tuple[str, int]]:
        return (Interrupted, (str(self), self.signum))
