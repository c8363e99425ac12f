"""The instants the tests and benchmarks stamp their readings with.

They must stay inside the default raw retention (400 days, CONTRACT §10): the collector dead-letters older
readings and InfluxDB drops points older than the retention policy `raw`. So they are not fixed dates but
fixed distances from today: UTC midnight a week ago, which is a multiple of every reporting interval and
08:00 in the park's time zone (Asia/Shanghai, no daylight saving), like the fixed date the tests were written
for. Everything a test asserts is relative to it.
"""

from __future__ import annotations

import time

DAY_MS = 86_400_000
# UTC midnight, seven days before the day this process started
RECENT_MIDNIGHT_MS = (time.time_ns() // 1_000_000 // DAY_MS - 7) * DAY_MS
# the same instant's midnight in Asia/Shanghai (UTC+8): 8 hours earlier
RECENT_LOCAL_MIDNIGHT_MS = RECENT_MIDNIGHT_MS - 8 * 3_600_000
