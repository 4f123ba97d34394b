"""Quartz cron expressions (the job schedule format): parse once, find the next fire time."""
from __future__ import annotations

import calendar
import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
# Quartz numbers days of the week 1 (SUN) .. 7 (SAT).
DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
FIELDS = (("seconds", 0, 59, {}), ("minutes", 0, 59, {}), ("hours", 0, 23, {}),
          ("day-of-month", 1, 31, {}), ("month", 1, 12, MONTHS), ("day-of-week", 1, 7, DAYS),
          ("year", 1970, 2199, {}))
SEARCH_DAYS = 366 * 8


class CronError(ValueError):
    """An expression Quartz would refuse."""


def _value(text: str, name: str, lo: int, hi: int, names: dict) -> int:
    key = text.upper()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise CronError(f"Invalid {name} value {text!r}.")
    value = int(text)
    if not lo <= value <= hi:
        raise CronError(f"The {name} value {value} is outside {lo}-{hi}.")
    return value


def _set(text: str, name: str, lo: int, hi: int, names: dict) -> frozenset[int]:
    """Values of a plain field: *, lists, ranges and steps (a-b/n, */n, a/n)."""
    out: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"Invalid step {step_text!r} in the {name} field.")
            step = int(step_text)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, name, lo, hi, names), _value(b, name, lo, hi, names)
        else:
            start = _value(base, name, lo, hi, names)
            end = hi if step_text else start
        if start <= end:
            out.update(range(start, end + 1, step))
        else:  # wrapping range such as FRI-MON or 22-2
            span = list(range(start, hi + 1)) + list(range(lo, end + 1))
            out.update(span[::step])
    if not out:
        raise CronError(f"The {name} field matches nothing.")
    return frozenset(out)


class Cron:
    """A parsed Quartz expression: sec min hour day-of-month month day-of-week [year]."""

    def __init__(self, expression: str):
        if not isinstance(expression, str) or not expression.strip():
            raise CronError("The cron expression is empty.")
        parts = expression.split()
        if len(parts) not in (6, 7):
            raise CronError(f"A Quartz cron expression has 6 or 7 fields (seconds first); got {len(parts)}.")
        parts.append("*") if len(parts) == 6 else None
        self.expression = expression
        sets = {}
        for (name, lo, hi, names), text in zip(FIELDS, parts):
            if name in ("day-of-month", "day-of-week"):
                continue
            sets[name] = _set(text, name, lo, hi, names)
        self.seconds, self.minutes, self.hours = sets["seconds"], sets["minutes"], sets["hours"]
        self.months, self.years = sets["month"], sets["year"]
        dom, dow = parts[3], parts[5]
        if (dom == "?") == (dow == "?"):
            raise CronError("Support for specifying both a day-of-week AND a day-of-month parameter is not "
                            "implemented: exactly one of them must be '?'.")
        self._day = self._dom_matcher(dom) if dow == "?" else self._dow_matcher(dow)

    @staticmethod
    def _dom_matcher(text: str):  # noqa: ANN205
        up = text.upper()
        if up == "L" or up.startswith("L-"):
            back = int(up[2:]) if up.startswith("L-") and up[2:].isdigit() else 0
            return lambda d: d.day == calendar.monthrange(d.year, d.month)[1] - back
        if up == "LW":
            return lambda d: d == _weekday_near(d.year, d.month, calendar.monthrange(d.year, d.month)[1])
        if up.endswith("W"):
            day = _value(up[:-1], "day-of-month", 1, 31, {})
            return lambda d: day <= calendar.monthrange(d.year, d.month)[1] and d == _weekday_near(
                d.year, d.month, day)
        days = _set(text, "day-of-month", 1, 31, {})
        return lambda d: d.day in days

    @staticmethod
    def _dow_matcher(text: str):  # noqa: ANN205
        up = text.upper()
        if "#" in up:
            a, _, n = up.partition("#")
            day = _value(a, "day-of-week", 1, 7, DAYS)
            if not n.isdigit() or not 1 <= int(n) <= 5:
                raise CronError(f"Invalid day-of-week occurrence {text!r}.")
            return lambda d: _quartz_dow(d) == day and (d.day - 1) // 7 + 1 == int(n)
        if up.endswith("L") and len(up) > 1:
            day = _value(up[:-1], "day-of-week", 1, 7, DAYS)
            return lambda d: _quartz_dow(d) == day and d.day + 7 > calendar.monthrange(d.year, d.month)[1]
        if up == "L":
            return lambda d: _quartz_dow(d) == 7
        days = _set(text, "day-of-week", 1, 7, DAYS)
        return lambda d: _quartz_dow(d) in days

    def next_after(self, after: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
        """The first fire time strictly after `after` (aware), in the schedule's time zone."""
        local = after.astimezone(tz).replace(microsecond=0) + dt.timedelta(seconds=1)
        day = local.date()
        for _ in range(SEARCH_DAYS):
            if day.year in self.years and day.month in self.months and self._day(day):
                floor = (local.hour, local.minute, local.second) if day == local.date() else (0, 0, 0)
                for h in sorted(self.hours):
                    if h < floor[0]:
                        continue
                    for m in sorted(self.minutes):
                        if (h, m) < floor[:2]:
                            continue
                        for s in sorted(self.seconds):
                            if (h, m, s) < floor:
                                continue
                            candidate = dt.datetime(day.year, day.month, day.day, h, m, s, tzinfo=tz)
                            if candidate > after:
                                return candidate
            day += dt.timedelta(days=1)
        return None


def _quartz_dow(d: dt.date) -> int:
    return (d.weekday() + 1) % 7 + 1  # Monday=0 in Python -> 2 in Quartz


def _weekday_near(year: int, month: int, day: int) -> dt.date:
    """The weekday nearest to the given day within the same month (Quartz 'W')."""
    d = dt.date(year, month, day)
    if d.weekday() == 5:
        return d - dt.timedelta(days=1) if day > 1 else d + dt.timedelta(days=2)
    if d.weekday() == 6:
        last = calendar.monthrange(year, month)[1]
        return d + dt.timedelta(days=1) if day < last else d - dt.timedelta(days=2)
    return d


def zone(timezone_id: str) -> dt.tzinfo:
    """A time zone by its Java/IANA id ('UTC', 'Europe/Paris')."""
    try:
        return ZoneInfo(timezone_id)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise CronError(f"Unknown timezone_id {timezone_id!r}; use an IANA id such as 'UTC' or "
                        "'America/Los_Angeles'.") from None
