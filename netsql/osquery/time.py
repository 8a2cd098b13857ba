"""osquery.time: the current time, one row (UTC, as osquery)."""

from __future__ import annotations

import datetime as dt
import time as _clock

from netsql.collect import Collection, Need
from netsql.osquery.spec import col, table
from netsql.schema import Columns


def collect(coll: Collection, need: Need) -> Columns:
    now = dt.datetime.fromtimestamp(int(coll.started), dt.UTC)
    local = _clock.strftime("%Z", _clock.localtime(coll.started))
    row = {
        "weekday": now.strftime("%A"), "year": now.year, "month": now.month,
        "day": now.day, "hour": now.hour, "minutes": now.minute, "seconds": now.second,
        "timezone": "UTC", "local_timezone": local, "unix_time": int(now.timestamp()),
        "timestamp": now.strftime("%a %b %e %H:%M:%S %Y UTC"),
        "datetime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "iso_8601": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return {k: [v] for k, v in row.items()}


TABLE = table(
    "time",
    "Track current date and time in UTC (osquery's time): one row.",
    [
        col("weekday", "TEXT", "Current weekday in UTC ('Monday')"),
        col("year", "INTEGER", "Current year in UTC"),
        col("month", "INTEGER", "Current month in UTC"),
        col("day", "INTEGER", "Current day in UTC"),
        col("hour", "INTEGER", "Current hour in UTC"),
        col("minutes", "INTEGER", "Current minutes in UTC"),
        col("seconds", "INTEGER", "Current seconds in UTC"),
        col("timezone", "TEXT", "Timezone for reported time (hardcoded to UTC)"),
        col("local_timezone", "TEXT", "Current local timezone of the system"),
        col("unix_time", "INTEGER", "Current UNIX time in UTC"),
        col("timestamp", "TEXT", "Current timestamp (log format) in UTC"),
        col("datetime", "TEXT", "Current date and time (ISO format) in UTC"),
        col("iso_8601", "TEXT", "Current time (ISO format) in UTC"),
    ],
    collect,
    examples=("SELECT unix_time, datetime FROM time",),
    notes="The moment the statement's collection began. TIME is an SQL keyword: "
    "write osquery.time or \"time\".",
)
