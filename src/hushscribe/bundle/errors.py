"""Errors of building or checking a bundle."""

from __future__ import annotations

from hushscribe.errors import HushscribeError


class BundleError(HushscribeError):
    """A bundle cannot be built as asked (unknown model or extra, no source checkout, pip
    failed), or a bundle given to check cannot be read."""

    code = "bundle_error"
    status = 400
    type = "invalid_request_error"
