"""hushscribe: speech-to-text that never leaves your network."""

import os as _os

# Before anything can import huggingface_hub (faster-whisper does): it must never reach a hub.
# Forced, not defaulted: an inherited HF_HUB_OFFLINE=0 must not switch downloads back on.
_os.environ["HF_HUB_OFFLINE"] = "1"
_os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
_os.environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"  # noqa: S105 (a flag, not a secret)
# onnxruntime (faster-whisper's Silero VAD) sends usage telemetry from its C++ code to an outside
# collector — a name lookup ~20 s after the first VAD run, then repeatedly: no Python audit hook
# sees it (tests/e2e/test_zero_egress.py caught it on the wire). Read once, at its import.
_os.environ["ORT_DISABLE_TELEMETRY"] = "1"

# Proxy variables would send a library's request to a proxy, out of the network: removed before
# anything can read them, kept aside for `network.use_proxy_env = true` (security/egress.py).
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy")
_SET_ASIDE_PROXY_ENV = {
    name: _os.environ.pop(name)
    for var in PROXY_VARIABLES
    for name in (var, var.upper())
    if name in _os.environ
}

__version__ = "0.1.0"
