"""Deployment files: the systemd unit and its GPU drop-in, the nginx site, firewall rules.

The samples live in this package (``systemd/``, ``nginx/``), so an installed hushscribe prints
them on a machine without the source tree (``hushscribe deploy systemd|nginx``); the checkout's
``deploy/`` folder links to the same files. Firewall rules are generated
(:mod:`hushscribe.deploy.firewall`).
"""

from __future__ import annotations

from importlib.resources import files

SAMPLES: dict[str, str] = {
    "systemd": "systemd/hushscribe.service",
    "systemd-gpu": "systemd/gpu.conf",
    "nginx": "nginx/hushscribe.conf",
}
"""Name → file in this package."""


def sample(name: str) -> str:
    """The text of the shipped sample ``name`` (a key of :data:`SAMPLES`)."""
    return files(__name__).joinpath(SAMPLES[name]).read_text(encoding="utf-8")
