"""Live transcription: a stream's buffer, turns and the agreement of its partial text."""

from hushscribe.stream.agreement import LocalAgreement, TimedWord
from hushscribe.stream.session import StreamOptions, StreamSession

__all__ = ["LocalAgreement", "StreamOptions", "StreamSession", "TimedWord"]
