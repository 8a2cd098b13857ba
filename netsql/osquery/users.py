"""osquery.users: local user accounts, from /etc/passwd."""

from __future__ import annotations

from netsql import procfs
from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns

PASSWD = "/etc/passwd"


def signed32(n: int) -> int:
    return n - (1 << 32) if n >= 1 << 31 else n


def collect(coll: Collection, need: Need) -> Columns:
    cols: Columns = {k: [] for k in ("uid", "gid", "uid_signed", "gid_signed", "username",
                                     "description", "directory", "shell", "uuid",
                                     "pid_with_namespace", "include_remote")}
    for line in (procfs.read_text(PASSWD) or "").splitlines():
        f = line.split(":")
        if len(f) < 7 or not f[2].isdigit() or not f[3].isdigit():
            continue
        uid, gid = int(f[2]), int(f[3])
        for k, v in (("uid", uid), ("gid", gid), ("uid_signed", signed32(uid)),
                     ("gid_signed", signed32(gid)), ("username", f[0]),
                     ("description", f[4]), ("directory", f[5]), ("shell", f[6]),
                     ("uuid", ""), ("pid_with_namespace", 0), ("include_remote", 0)):
            cols[k].append(v)
    return cols


TABLE = table(
    "users",
    "Local user accounts (osquery's users), from /etc/passwd.",
    [
        col("uid", "BIGINT", "User ID"),
        col("gid", "BIGINT", "Group ID (unsigned)"),
        col("uid_signed", "BIGINT", "User ID as int64 signed (Apple)"),
        col("gid_signed", "BIGINT", "Default group ID as int64 signed (Apple)"),
        col("username", "TEXT", "Username"),
        col("description", "TEXT", "Optional user description (the GECOS field)"),
        col("directory", "TEXT", "User's home directory"),
        col("shell", "TEXT", "User's configured default shell"),
        col("uuid", "TEXT", "User's UUID (Apple) or SID (Windows): '' on Linux"),
        col("pid_with_namespace", "INTEGER", "osquery reads a container's file with it; "
            "here always 0 (hidden)", hidden=True),
        col("include_remote", "INTEGER", "osquery's switch for LDAP/AD accounts; here "
            "always 0: only /etc/passwd (hidden)", hidden=True),
    ],
    collect,
    examples=("SELECT uid, username, shell FROM users WHERE shell NOT LIKE '%nologin'",),
)
