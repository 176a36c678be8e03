"""Durable jobs: the queue in SQLite or PostgreSQL, and the uploaded media on disk."""

from hushscribe.jobs.blobs import Blob, BlobStore, BlobWriter
from hushscribe.jobs.queue import WORKER_LOST, JobQueue, JobRecord, make_engine

__all__ = ["WORKER_LOST", "Blob", "BlobStore", "BlobWriter", "JobQueue", "JobRecord", "make_engine"]
