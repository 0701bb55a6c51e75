"""`backend: auto`: Ascend's encoder where pyACL and a device are present, else PyAV."""

from __future__ import annotations

import glob
import importlib.util


def acl_available() -> bool:
    return importlib.util.find_spec("acl") is not None and bool(glob.glob("/dev/davinci[0-9]*"))


def resolve_backend() -> str:
    return "acl" if acl_available() else "pyav"
