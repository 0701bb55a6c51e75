"""The exception tree every expected failure uses, and the process exit codes."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    RESOURCE = 4  # shm space, a bound socket, a lock, a device


class DaemonError(Exception):
    """An expected failure, reported to the operator as one line."""

    exit_code = ExitCode.FAILURE

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(DaemonError):
    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[str], hint: str = "") -> None:
        super().__init__("\n".join(problems), hint)
        self.problems = problems


class ResourceError(DaemonError):
    exit_code = ExitCode.RESOURCE


class ShmError(ResourceError):
    pass


class EncoderError(DaemonError):
    """An encoder channel could not be created or refused a frame."""


class CaptureError(DaemonError):
    """The capture client could not reach or was refused by the worker."""


class ControlError(DaemonError):
    pass
