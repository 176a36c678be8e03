"""``hushscribe doctor``: is this host ready to serve, and safe to? Each check returns rows of
OK / WARN / FAIL with what was found and, for WARN and FAIL, the exact fix.

Nothing is imported here: the egress probe (``python -m hushscribe.doctor.egress_probe``) starts
with this package and must stay quick. The checks are run by :func:`hushscribe.doctor.run.run`.
"""
