"""Endpoint rules: what a ZeroMQ endpoint in the config may look like, and which two sockets
the daemon binds would collide. Pure functions over strings; DaemonConfig calls them."""

from __future__ import annotations

import posixpath

IPC_PATH_MAX = 107  # sun_path is 108 bytes including the NUL
WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "[::]", "::"})
# The path of a field in the config, e.g. ("streams", 2, "ingest", 0).
Loc = tuple[str | int, ...]


def split_tcp(ep: str) -> tuple[str, int] | None:
    """("host", port) of a tcp://HOST:PORT endpoint, None when it is not one."""
    if not ep.startswith("tcp://"):
        return None
    host, _, port = ep[6:].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if any(c in host for c in "/ ") or (":" in host and not host.startswith("[")):
        return None
    return host, int(port)


def check_endpoint(ep: str) -> str:
    if ep.startswith("ipc://"):
        path = ep[6:]
        if not path.startswith("/"):
            raise ValueError(f"{ep!r}: allowed: ipc:// followed by an absolute path")
        if len(path.encode()) > IPC_PATH_MAX:
            raise ValueError(
                f"{ep!r}: the socket path is {len(path.encode())} bytes; at most {IPC_PATH_MAX}"
            )
    elif ep.startswith("tcp://"):
        if split_tcp(ep) is None:
            raise ValueError(
                f"{ep!r}: allowed: tcp://HOST:PORT with HOST an address, a name, * or [IPv6] "
                "and PORT in 1..65535"
            )
    else:
        raise ValueError(f"{ep!r}: allowed: ipc:///absolute/path or tcp://HOST:PORT")
    return ep


def endpoints_collide(a: str, b: str) -> bool:
    """Whether binding both would fail or steal: the same ipc path, or tcp on one port where
    the hosts are equal or either is a wildcard."""
    if a.startswith("ipc://") and b.startswith("ipc://"):
        return posixpath.normpath(a[6:]) == posixpath.normpath(b[6:])
    ta, tb = split_tcp(a), split_tcp(b)
    if ta is None or tb is None or ta[1] != tb[1]:
        return False
    return ta[0] == tb[0] or ta[0] in WILDCARD_HOSTS or tb[0] in WILDCARD_HOSTS


def socket_problems(claims: list[tuple[str, str, Loc]], runtime_dir: str) -> list[tuple[Loc, str]]:
    """A socket that collides with one claimed before it is reported at its own path;
    paths derived from runtime_dir that are too long are reported once, at runtime_dir.
    `claims` are (endpoint, owner, path to blame) in claim order."""
    rd: Loc = ("runtime_dir",)
    problems: list[tuple[Loc, str]] = []
    longest = max(
        (ep[6:] for ep, _, at in claims if at == rd and ep.startswith("ipc://")),
        key=lambda path: len(path.encode()),
    )
    if len(longest.encode()) > IPC_PATH_MAX:
        problems.append(
            (
                rd,
                f"{runtime_dir!r} makes the socket path {longest} "
                f"{len(longest.encode())} bytes long; at most {IPC_PATH_MAX}: "
                "choose a shorter runtime_dir",
            )
        )
        return problems  # every default path under it is too long as well
    for k, (ep, _, at) in enumerate(claims):
        size = len(ep[6:].encode())
        if at[-1:] == ("name",) and ep.startswith("ipc://") and size > IPC_PATH_MAX:
            problems.append(
                (
                    at,
                    f"its default ingest socket path {ep[6:]} is {size} bytes; at most "
                    f"{IPC_PATH_MAX}: shorten the name or runtime_dir, or set ingest",
                )
            )
            continue
        for other, other_owner, _ in claims[:k]:
            if endpoints_collide(ep, other):
                what = ep if at[-1:] != ("name",) else f"its default ingest endpoint {ep}"
                problems.append((at, f"{what} collides with {other_owner} ({other})"))
                break
    return problems
