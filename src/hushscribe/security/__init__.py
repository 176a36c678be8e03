"""Who may do what, from where: network allowlist, users, keys, sessions, LDAP, TLS."""
