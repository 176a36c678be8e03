"""Tamper-evident audit log: typed events, a hash-chained, HMAC-ed, signed JSON Lines log."""
