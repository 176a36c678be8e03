"""Prepare a hushscribe pod's volumes before the server starts (the chart's init container).

It runs as the pod's own user, never root, so it does only what that user may:

1. Create the data directory (hushscribe's ``data_dir``) inside the shared data volume, owned by
   this user, mode 0700. hushscribe makes ``data_dir`` private with chmod, which only the owner
   may do; the root of a freshly provisioned volume belongs to root (``fsGroup`` gives the pod's
   group write access to it, not ownership), so ``data_dir`` is a directory this user makes.
2. With the audit keys from a Secret: copy them into the keys directory (a memory ``emptyDir``),
   mode 0600. A Secret volume is read-only and hushscribe writes beside its keys.

    python3 prepare.py VOLUME_ROOT DATA_SUBDIR [KEYS_SOURCE KEYS_DIR]

Exit status 0 when done, 1 with the reason on stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

KEY_FILES = ("audit-hmac.key", "audit-signing.pem")
"""The names hushscribe reads in ``audit.keys_dir``, and the keys the Secret must carry."""


def data_dir(volume_root: Path, subdir: str) -> Path:
    """``volume_root/subdir``, made if missing, owned by this user and mode 0700."""
    path = volume_root / subdir
    path.mkdir(mode=0o700, exist_ok=True)
    owner = path.stat().st_uid
    if owner != os.getuid():
        raise PermissionError(
            f"{path} belongs to uid {owner}, not to this pod's user {os.getuid()}: hushscribe "
            f"must own its data directory (chown -R {os.getuid()} it on the volume once)"
        )
    path.chmod(0o700)
    return path


def copy_keys(source: Path, target: Path) -> None:
    """The audit keys from ``source`` (the Secret's mount) to ``target``, each mode 0600."""
    missing = [name for name in KEY_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the audit keys Secret lacks {', '.join(missing)}: it must hold the keys "
            f"{' and '.join(KEY_FILES)} (the files of an existing <data_dir>/keys)"
        )
    target.chmod(0o700)
    for name in KEY_FILES:
        data = (source / name).read_bytes()
        dest = target / name
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        dest.chmod(0o600)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 4):
        print(__doc__, file=sys.stderr)
        return 1
    try:
        made = data_dir(Path(argv[0]), argv[1])
        print(f"data directory {made} ready")
        if len(argv) == 4:
            copy_keys(Path(argv[2]), Path(argv[3]))
            print(f"audit keys copied to {argv[3]}")
    except OSError as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
