"""hushscribe: speech-to-text that never leaves your network."""

import os as _os

# Before anything can import huggingface_hub (faster-whisper does): it must never reach a hub.
# Forced, not defaulted: an inherited HF_HUB_OFFLINE=0 must not switch downloads back on.
_os.environ["HF_HUB_OFFLINE"] = "1"
_os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
_os.environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"  # noqa: S105 (a flag, not a secret)

__version__ = "0.1.0"
