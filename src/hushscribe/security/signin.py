"""Sign-in with a user name and password: local users (argon2id) or the directory (LDAP).

The same answer, and the same work, for an unknown name, a wrong password and a disabled
account: every local check verifies a hash (a dummy one when there is no user), so neither the
message nor the time tells which it was. Failed attempts are counted per account and per source
address; past the limit, 429 with Retry-After until the oldest failure leaves the window.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Final

from hushscribe.errors import InvalidCredentials, TooManyAttempts
from hushscribe.security.passwords import verify_password
from hushscribe.security.users import User, UserStore
from hushscribe.settings import AuthSettings

if TYPE_CHECKING:
    from hushscribe.security.ldap import LdapDirectory

BAD_CREDENTIALS: Final = "invalid user name or password"
_MAX_TRACKED: Final = 100_000  # names and addresses remembered; the oldest are forgotten first


class Throttle:
    """Failed sign-ins in a sliding window, per account and per address (in this process)."""

    def __init__(self, window_s: float, per_account: int, per_address: int) -> None:
        self.window_s = window_s
        self.limits = {"account": per_account, "address": per_address}
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def check(self, account: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (("account", account), ("address", address)):
                times = self._recent(key, now)
                if len(times) >= self.limits[key[0]]:
                    wait = max(1, math.ceil(times[0] + self.window_s - now))
                    raise TooManyAttempts(
                        "too many failed sign-ins; try again later",
                        headers={"Retry-After": str(wait)},
                    )

    def failed(self, account: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in (("account", account), ("address", address)):
                times = self._recent(key, now)
                times.append(now)
                self._failures[key] = times
                self._failures.move_to_end(key)
            while len(self._failures) > _MAX_TRACKED:
                self._failures.popitem(last=False)

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._failures.pop(("account", account), None)


class SignIn:
    def __init__(
        self, users: UserStore, settings: AuthSettings, directory: LdapDirectory | None = None
    ) -> None:
        self.users = users
        self.settings = settings
        if directory is None and settings.ldap is not None:
            from hushscribe.security.ldap import LdapDirectory

            directory = LdapDirectory(settings.ldap)
        self.directory = directory
        self.throttle = Throttle(
            settings.login_window_s,
            settings.login_max_failures_per_account,
            settings.login_max_failures_per_address,
        )

    def authenticate(self, username: str, password: str, address: str) -> tuple[User, str]:
        """``(user, method)`` for good credentials; InvalidCredentials, TooManyAttempts, or
        DirectoryUnavailable (the directory is down: refused, never let through)."""
        account = username.strip().lower()[:256]
        self.throttle.check(account, address)
        found = self.users.by_name(username) if username.strip() else None
        directory_user = found is not None and found[0].source == "ldap"
        if self.directory is not None and (directory_user or found is None):
            user = self._directory(username, password)
            method = "ldap"
        else:
            # A local user, or no such user and no directory: the same hash work either way.
            ok = verify_password(found[1] if found else None, password) and bool(password)
            user = found[0] if ok and found else None
            method = "local"
        if user is None or user.disabled:
            self.throttle.failed(account, address)
            raise InvalidCredentials(BAD_CREDENTIALS)
        self.throttle.succeeded(account)
        self.users.signed_in(user.id)
        return user, method

    def _directory(self, username: str, password: str) -> User | None:
        assert self.directory is not None and self.settings.ldap is not None
        try:
            person = self.directory.authenticate(username, password)
        except InvalidCredentials:
            return None
        if self.users.by_name(person.username) is None and not self.settings.ldap.auto_provision:
            return None
        return self.users.provision(person.username, person.role)
