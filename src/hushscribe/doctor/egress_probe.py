"""The doctor's egress probe, run as ``python -m hushscribe.doctor.egress_probe`` in a process of
its own (the guard cannot be removed from a process once on): the settings arrive as JSON on
stdin, the guard is applied as ``hushscribe`` applies it, and two attempts are put to it.

The attempts are raised as audit events with ``sys.audit``: that runs the guard's hook exactly as
``socket.connect``/``socket.getaddrinfo`` would, without the socket operation, so nothing is sent
even if the guard were broken. Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

PROBES: tuple[tuple[str, str, tuple[Any, ...]], ...] = (
    ("connect to 192.0.2.1:9", "socket.connect", (None, ("192.0.2.1", 9))),
    ("lookup of example.com", "socket.getaddrinfo", ("example.com", 443, 0, 0, 0)),
)
"""192.0.2.1 is TEST-NET-1 (RFC 5737) and example.com is reserved (RFC 2606): neither is
anybody's server, should an attempt ever leave."""


def _no_lookups(*args: Any, **kwargs: Any) -> Any:
    raise OSError("no name lookups in the doctor's egress probe")


def main() -> None:
    from hushscribe.security import egress
    from hushscribe.settings import load_settings

    settings = load_settings(None, **json.loads(sys.stdin.read()))
    # On the way to a refusal the guard resolves the configured host names (LDAP, syslog…) to
    # let a moved server through; the probe asks no resolver, so the check stays silent.
    setattr(socket, "getaddrinfo", _no_lookups)  # noqa: B010 (mypy: a module function)
    guard_on = egress.apply(settings)
    results = {}
    for label, event, args in PROBES:
        try:
            sys.audit(event, *args)
        except egress.EgressBlocked:
            results[label] = True
        else:
            results[label] = False
    print(
        json.dumps(
            {
                "guard_on": guard_on,
                "blocked": results,
                "policy": egress.policy_for(settings).describe(),
            }
        )
    )


if __name__ == "__main__":
    main()
