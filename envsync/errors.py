"""The one error family: every failure a user can meet, with the exit code it maps to.

Exit codes (documented in README):
    0 ok, 1 error, 2 usage, 3 drift or stale lock found by a check, 130 interrupted.
"""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DRIFT = 3
EXIT_INTERRUPTED = 130


class EnvsyncError(Exception):
    """Base of every error envsync reports; `hint` tells the user what to do next."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Long text (a tool's stderr) shown only with --verbose.
        self.detail = detail


class UsageError(EnvsyncError):
    """The command line itself is wrong."""

    exit_code = EXIT_USAGE


class NotebookError(EnvsyncError):
    """A file that is missing, unreadable, not JSON, or not an nbformat 4 notebook."""


class ConcurrentModificationError(NotebookError):
    """The notebook changed on disk between our read and our write."""


class ManifestError(EnvsyncError):
    """`metadata.envsync` is missing, fails the schema, or is from a newer envsync."""


class MissingManifestError(ManifestError):
    """The notebook has no `metadata.envsync` yet."""


class RequirementError(EnvsyncError):
    """A dependency string that is not a plain PEP 508 requirement we accept."""


class IndexNotAllowedError(EnvsyncError):
    """The manifest names a package index this machine has not allowed."""


class ResolutionError(EnvsyncError):
    """uv could not resolve the declared dependencies."""


class LockError(EnvsyncError):
    """The lock is malformed, inconsistent, or does not apply here."""


class StaleLockError(LockError):
    """The lock no longer matches the declared inputs."""

    exit_code = EXIT_DRIFT


class InstallError(EnvsyncError):
    """Building or installing an environment failed."""


class InterpreterNotFoundError(EnvsyncError):
    """No installed Python satisfies the lock's requires-python."""


class DriftError(EnvsyncError):
    """An environment differs from its lock."""

    exit_code = EXIT_DRIFT


class KernelError(EnvsyncError):
    """A kernelspec could not be written, read or removed."""


class GatewayError(EnvsyncError):
    """Kernel Gateway could not be configured, started or stopped."""


class ToolError(EnvsyncError):
    """An external tool (uv, pip, python) failed; `detail` keeps its stderr."""

    def __init__(
        self,
        message: str,
        *,
        command: list[str] | None = None,
        returncode: int | None = None,
        stderr: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, detail=stderr or None)
        self.command = command or []
        self.returncode = returncode
        self.stderr = stderr
