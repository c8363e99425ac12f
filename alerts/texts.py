"""Every text an operator reads, in both languages: alarm labels, the message of an alarm event, the details
the rules give, and the notification texts (title, body, flood summaries).

The engine and the notification routing only call these; a change of wording, or a new rule's label, is
made here alone. Chinese first in the message, English after the ``|`` (the park's operators read Chinese;
contractors and machines read English); the alarm id closes the message, so a text can be quoted.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

from smartpark.numbers import beside_limit
from smartpark.schema import (
    BAD_QUALITY,
    ESCALATION,
    EVENT,
    HH,
    LL,
    NO_DATA,
    OUT_OF_RANGE,
    REG_5MIN_EXCURSIONS,
    REPEAT,
    ROC,
    STUCK,
    H,
    L,
)

from .events import RAISED

if TYPE_CHECKING:
    from .alarm import Alarm
    from .events import AlarmEvent

LABELS = {
    HH: ("High-high", "高高报警"), H: ("High", "高报警"), L: ("Low", "低报警"), LL: ("Low-low", "低低报警"),
    ROC: ("Rate of change", "变化率报警"), NO_DATA: ("No data", "无数据"),
    STUCK: ("Flat-lined (stuck)", "数据恒定(疑似卡死)"), OUT_OF_RANGE: ("Outside instrument range", "超出量程"),
    REG_5MIN_EXCURSIONS: ("More than 5 five-minute excursions today", "当日5分钟均值超标超过5次"),
    "reg_instant": ("Regulatory limit", "超过排放/法规限值"), "reg_5min": ("Regulatory 5-min mean", "5分钟均值超标"),
    "reg_1h": ("Regulatory hourly mean", "小时均值超标"), "reg_24h": ("Regulatory daily mean", "日均值超标"),
    "reg_monthly": ("Regulatory monthly mean", "月均值超标"),
    BAD_QUALITY: ("Bad quality", "数据质量坏"),
}
#: rules whose message is their detail alone (no value against a limit)
DETAIL_ONLY = frozenset((NO_DATA, STUCK, OUT_OF_RANGE, BAD_QUALITY, REG_5MIN_EXCURSIONS))
#: what a notification's title says before the alarm, by reason
REASON_TAGS = {EVENT: "", REPEAT: "[未确认 unacknowledged] ", ESCALATION: "[升级 escalated] "}


def fmt(v: float | None) -> str:
    """A value as an operator reads it: 4 significant digits, large values whole."""
    if v is None:
        return "-"
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"


def beside(value: float | None, limit: float | None) -> tuple[str, str]:
    """Value and limit with the digits that show the side (1099.6 beside 1100 never reads as 1100)."""
    if value is None or limit is None:
        return fmt(value), fmt(limit)
    return beside_limit(value, limit)


def label(rule: str, message: str | None = None, message_zh: str | None = None,
          custom: bool = False) -> tuple[str, str]:
    """(English, Chinese) name of an alarm's rule; a custom rule is named by its messages in the rules file."""
    got = LABELS.get(rule)
    if got:
        return got
    return (message or rule, message_zh or rule) if custom else (rule, rule)


def alarm_message(a: Alarm, kind: str, detail: str) -> str:
    """The message of a ``raised`` or ``cleared`` event (and of the alarm list)."""
    s = a.ref.sensor
    en, zh = a.label
    unit = s.unit
    if a.rule in DETAIL_ONLY or a.custom:
        what_en, what_zh = detail, detail
    else:
        value, limit = beside(a.value, a.limit)
        what_en = f"{value} {unit} (limit {limit})" + (f", {detail}" if detail else "")
        what_zh = f"{value} {unit} (限值 {limit})" + (f", {detail}" if detail else "")
    name_zh = s.name_zh or s.name
    if kind == RAISED:
        return f"【{zh}】{name_zh} {what_zh} | {en}: {s.name} {what_en} [{a.id}]"
    return f"【恢复】{zh} {name_zh} {what_zh} | Cleared: {en}, {s.name} {what_en} [{a.id}]"


def audit(verb: str, operator: str, comment: str | None) -> str:
    """The message of an operator's action."""
    return f"{verb} by {operator}" + (f": {comment}" if comment else "")


# ---------------------------------------------------------------- details of the rules
def no_data(seconds: int) -> str:
    return f"no reading for more than {seconds} s (3 x interval)"


def out_of_range(v: float, unit: str, lo: float, hi: float) -> str:
    return f"{fmt(v)} {unit} outside [{fmt(lo)}, {fmt(hi)}]"


def back_in_range(v: float, unit: str) -> str:
    return f"{fmt(v)} {unit} back in range"


def bad_quality(seconds: int) -> str:
    return f"quality bad for more than {seconds} s (readings not evaluated against limits)"


def quality_again(quality: str) -> str:
    return f"quality {quality} again"


def stuck(v: float, minutes: float) -> str:
    return f"value {fmt(v)} unchanged for {minutes:.0f} min"


def unstuck(v: float) -> str:
    return f"value changes again ({fmt(v)})"


def rate(rate_per_min: float, unit: str, limit: float) -> str:
    return f"{fmt(rate_per_min)} {unit}/min (limit {fmt(limit)})"


def rolling_mean(n: int) -> str:
    return f"5-min mean of {n} values"


def hourly_mean(n: int, need: int) -> str:
    return f"hourly mean of {n} values (valid, need {need})"


def daily_mean(hours: int, need: int) -> str:
    return f"daily mean of {hours} valid hours (need {need})"


def monthly_mean(days: int, need: int) -> str:
    return f"monthly mean of {days} valid days (need {need})"


def excursions(count: int) -> str:
    return f"{count} five-minute excursions today (more than 5)"


def custom(expression: str, message: str | None) -> str:
    return expression + (f": {message}" if message else "")


def suppressed(state: str) -> str:
    return f"suppressed by plant state {state}"


DATA_AGAIN = "data again"
NEW_DAY = "a new day starts"
SHELVING_EXPIRED = "shelving expired"


# ---------------------------------------------------------------- notifications
def notification(ev: AlarmEvent, reason: str, tz: tzinfo, public_url: str | None) -> tuple[str, str]:
    """(title, body) of the notification of one event; the routing appends the notification id."""
    when = datetime.fromtimestamp(ev.ts / 1000, tz).strftime("%Y-%m-%d %H:%M:%S %Z")
    title = f"{REASON_TAGS[reason]}[{ev.priority.upper()}] {ev.event} {ev.id}"
    body = f"{ev.message}\n{ev.state} · {when}" + (f" · {ev.operator}" if ev.operator else "")
    if public_url:
        body += f"\n{public_url}/alarm/{ev.id}"
    return title, body


def flood(site: str, n: int, until: int) -> tuple[str, str]:
    """(title, body) of the one summary people get when a flood starts at a site."""
    return (f"[FLOOD] 报警泛滥 alarm flood at {site}",
            f"站点 {site} 10分钟内 {n} 条报警, 暂停逐条通知 | {n} alarms in 10 minutes at {site}: individual "
            f"notifications are held until fewer than {until} in 10 minutes.")


def flood_over(site: str, held: int) -> tuple[str, str]:
    """(title, body) of the summary at the end of a flood."""
    return (f"[FLOOD OVER] 报警泛滥结束 {site}",
            f"站点 {site} 报警泛滥结束, 期间暂停通知 {held} 条 | alarm flood at {site} is over; {held} notifications "
            f"were held, see the alarm list.")
