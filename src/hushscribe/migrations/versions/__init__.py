"""Schema revisions, oldest first: ``v<rev>_<slug>.py``. Each is frozen once released."""
