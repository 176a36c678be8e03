"""Settings of who may reach the service and how they authenticate: the source-address
allowlist, users' sign-in (sessions, throttling, argon2 costs), LDAP, static API keys. Part of
:class:`hushscribe.settings.Settings` (``network`` and ``auth``); kept here so that each file
stays readable."""

from __future__ import annotations

import itertools
from ipaddress import ip_network
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

Role = Literal["admin", "user", "auditor"]
Scope = Literal["transcribe", "jobs:read", "admin", "audit:read", "metrics"]

LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


class NetworkSettings(BaseModel):
    """Who may connect, judged on the connection's source address before anything else."""

    model_config = ConfigDict(extra="forbid")

    allow: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ip_network(n) for n in LOOPBACK],
        description="CIDRs clients may connect from; any other address gets 403 before it is "
        "authenticated and before its body is read. Loopback only by default: list your "
        'networks (e.g. `["10.20.0.0/16"]`) to open the service to them.',
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Reverse proxies whose `X-Forwarded-For` is believed: the client is the "
        "right-most address in it that is not itself a trusted proxy. From any other peer the "
        "header is ignored.",
    )
    metrics_allow: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="CIDRs that may read `/metrics` without a key (a Prometheus scraper); from "
        "elsewhere it needs a key with the `metrics` scope.",
    )
    egress_guard: bool = Field(
        True,
        description="Refuse every outgoing connection and name lookup of the process except to "
        "loopback, the hosts these settings name (LDAP, syslog, database) and `egress_allow`; "
        "each refusal is logged and audited (`egress_blocked`). Turn off only to debug.",
    )
    egress_allow: list[str] = Field(
        default_factory=list,
        description="More destinations the process may reach: CIDRs (`10.20.0.0/16`) or host "
        "names (`pg.internal`). Loopback and the configured LDAP, syslog and database hosts are "
        "allowed without being listed.",
    )
    use_proxy_env: bool = Field(
        False,
        description="Honour `HTTP(S)_PROXY`/`ALL_PROXY`/`NO_PROXY` from the environment. Off: "
        "they are removed at start, before any library can read them (hushscribe itself needs "
        "no proxy: it connects to nothing outside).",
    )


API_KEY_MIN_CHARS = 32
"""An API key is a bearer secret that anyone on the network can try: 32 random characters are out
of reach of guessing (``secrets.token_urlsafe(32)`` gives 43); shorter or made-up ones are not."""

_PLACEHOLDER_WORDS = (
    "changethis", "changeme", "replaceme", "replace", "placeholder", "example", "sample", "secret",
    "password", "passwd", "apikey", "yourkey", "insecure", "default", "dummy", "test", "demo",
    "admin", "letmein", "qwerty", "123456", "abcdef", "todo", "fixme", "xxx",
)  # fmt: skip
_MIN_DISTINCT_CHARS = 8  # 32 hex digits use fewer than 8 of their 16 symbols ~4e-8 of the time
_MAX_RUN = 8  # one character 8 times in a row: "xxxxxxxx…", "sk-alice-aaaaaaaa…"
_MIN_LEFT_WITHOUT_WORDS = 16  # letters and digits left once placeholder words are taken out
_GENERATE = "python3 -c 'import secrets; print(\"hs-\" + secrets.token_urlsafe(32))'"


def api_key_weakness(key: str) -> str | None:
    """Why ``key`` is too weak to guard the API, in words that do not repeat it; None if fine."""
    if not key.strip():
        return "is empty"
    if len(key) < API_KEY_MIN_CHARS:
        return f"is too short ({len(key)} of at least {API_KEY_MIN_CHARS} characters)"
    run = 1
    for before, char in itertools.pairwise(key):
        run = run + 1 if char == before else 1
        if run >= _MAX_RUN:
            return f"repeats one character {_MAX_RUN} or more times in a row"
    if len(set(key)) < _MIN_DISTINCT_CHARS:
        return f"uses only {len(set(key))} different characters"
    rest = "".join(c for c in key.lower() if c.isalnum())
    for word in _PLACEHOLDER_WORDS:
        rest = rest.replace(word, "")
    if len(rest) < _MIN_LEFT_WITHOUT_WORDS:
        return "is a placeholder, made of words rather than random characters"
    return None


class LdapSettings(BaseModel):
    """Sign-in against a directory: search for the user with a service account, then bind as the
    user with the password given. Groups map to roles; a user in no mapped group cannot sign in."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str = Field(description="`ldaps://host:636` or `ldap://host:389` (with `start_tls`).")
    start_tls: bool = Field(False, description="Upgrade an `ldap://` connection with StartTLS.")
    ca_file: Path | None = Field(
        None, description="PEM CA certificate(s) the directory's certificate must chain to."
    )
    allow_plaintext: bool = Field(
        False,
        description="Allow `ldap://` without StartTLS: passwords cross the network in clear. "
        "Only for a directory on the same host.",
    )
    bind_dn: str | None = Field(None, description="Service account that searches for users.")
    bind_password: SecretStr | None = Field(None, description="Its password.")
    user_base: str = Field(description="Where users are searched, e.g. `ou=people,dc=example`.")
    user_filter: str = Field(
        "(uid={username})",
        description="Search filter; `{username}` is replaced by the escaped name typed.",
    )
    group_base: str | None = Field(
        None, description="Where groups are searched; unset: use the user's `memberOf`."
    )
    group_filter: str = Field(
        "(member={dn})", description="Groups of a user; `{dn}` is the user's escaped DN."
    )
    group_roles: dict[str, Role] = Field(
        default_factory=dict,
        description="Group DN → role. With several matches the strongest role wins "
        "(admin > auditor > user).",
    )
    default_role: Role | None = Field(
        None, description="Role of a directory user in no mapped group; unset: refused."
    )
    auto_provision: bool = Field(
        True, description="Create the local user record (no password) at first sign-in."
    )
    timeout_s: float = Field(5.0, gt=0, le=60, description="Connect and operation timeout.")

    @model_validator(mode="after")
    def _encrypted(self) -> LdapSettings:
        if not (self.url.lower().startswith(("ldap://", "ldaps://"))):
            raise ValueError("auth.ldap.url must start with ldap:// or ldaps://")
        plain = self.url.lower().startswith("ldap://") and not self.start_tls
        if plain and not self.allow_plaintext:
            raise ValueError(
                "auth.ldap.url is ldap:// without start_tls: passwords would cross the network "
                "in clear; use ldaps://, set start_tls = true, or allow_plaintext = true"
            )
        return self


class AuthSettings(BaseModel):
    """Who may call the API: users (local or LDAP) with sessions and API keys, and static keys
    from the configuration for automation."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # inputs are secrets

    api_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Static keys for automation: name → key, sent as `Authorization: Bearer "
        "KEY`; jobs made with one belong to `static:<name>`, and it may do what "
        "`static_key_scopes` says. Prefer database keys (`hushscribe keys create`: hashed, "
        f"revocable, expiring). A key has at least {API_KEY_MIN_CHARS} random characters; "
        "empty, short, repetitive and placeholder keys (`changeme`…) are refused.",
    )
    allow_anonymous: bool = Field(
        False,
        description="Serve requests without a key as owner `anonymous` (development only).",
    )
    static_key_scopes: list[Scope] = Field(
        default_factory=lambda: list[Scope](["transcribe", "jobs:read"]),
        description="What a key from `api_keys` may do.",
    )
    basic: bool = Field(
        False,
        description="Accept HTTP Basic (user name and password on every request) from API "
        "clients; off by default: prefer API keys.",
    )
    session_idle_s: float = Field(
        1800, gt=0, description="A browser session ends after this long without a request."
    )
    session_max_s: float = Field(
        43200, gt=0, description="A browser session ends this long after sign-in, used or not."
    )
    login_window_s: float = Field(
        300, gt=0, description="Window over which failed sign-ins are counted."
    )
    login_max_failures_per_account: int = Field(
        5, ge=1, description="Failed sign-ins to one account in the window before 429."
    )
    login_max_failures_per_address: int = Field(
        20, ge=1, description="Failed sign-ins from one address in the window before 429."
    )
    ldap: LdapSettings | None = Field(None, description="Directory sign-in; unset: local only.")
    argon2_time_cost: int = Field(
        3, ge=1, le=20, description="argon2id passes for new password hashes (RFC 9106: 3)."
    )
    argon2_memory_kib: int = Field(
        65536,
        ge=19456,
        le=4194304,
        description="argon2id memory per hash in KiB (RFC 9106: 64 MiB; OWASP's floor: 19 MiB). "
        "Each sign-in being checked holds this much.",
    )
    argon2_parallelism: int = Field(
        4, ge=1, le=16, description="argon2id lanes (threads) per hash (RFC 9106: 4)."
    )

    @field_validator("api_keys")
    @classmethod
    def _keys_are_strong(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        weak = [
            f"the API key of owner {owner!r} {why}"
            for owner, key in keys.items()
            if (why := api_key_weakness(key.get_secret_value())) is not None
        ]
        if weak:
            raise PydanticCustomError(
                "weak_api_key",
                "{problems}; use a random key of at least {min} characters, e.g. {generate}",
                {"problems": "; ".join(weak), "min": API_KEY_MIN_CHARS, "generate": _GENERATE},
            )
        return keys
