"""The control socket's reply codes (requests and replies are JSON)."""

from __future__ import annotations

import enum


class ControlCode(enum.StrEnum):
    """Error codes of control-socket replies."""

    INVALID_JSON = "invalid_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_COMMAND = "unknown_command"
    COMMAND_ERROR = "command_error"
    INTERNAL = "internal"
