"""The schedule trigger: fires job runs at the times of their Quartz cron schedules."""
from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from brickyard.services.cron import Cron, CronError, zone

log = logging.getLogger(__name__)
TICK_SECONDS = 0.25


class Scheduler:
    """One thread; each unpaused schedule keeps its next fire time. Missed fires are not replayed."""

    def __init__(self, fire: Callable[[int], None], clock: Callable[[], dt.datetime] | None = None):
        self.fire = fire
        self.clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._next: dict[int, tuple[Cron, dt.tzinfo, dt.datetime]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="job-scheduler", daemon=True)

    def set(self, job_id: int, schedule: dict | None) -> None:
        """(Re)arm a job's schedule; None or PAUSED disarms it."""
        with self._lock:
            self._next.pop(job_id, None)
            if not schedule or schedule.get("pause_status") == "PAUSED":
                return
            try:
                cron, tz = Cron(schedule["quartz_cron_expression"]), zone(schedule["timezone_id"])
            except (CronError, KeyError) as exc:
                log.warning("job %s: schedule ignored: %s", job_id, exc)
                return
            at = cron.next_after(self.clock(), tz)
            if at is not None:
                self._next[job_id] = (cron, tz, at)

    def next_fire(self, job_id: int) -> dt.datetime | None:
        entry = self._next.get(job_id)
        return entry[2] if entry else None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            now = self.clock()
            with self._lock:
                due = [job_id for job_id, (_, _, at) in self._next.items() if at <= now]
                for job_id in due:
                    cron, tz, _ = self._next[job_id]
                    at = cron.next_after(now, tz)
                    if at is None:
                        del self._next[job_id]
                    else:
                        self._next[job_id] = (cron, tz, at)
            for job_id in due:
                try:
                    self.fire(job_id)
                except Exception:  # noqa: BLE001 - one job's failure must not stop the others
                    log.exception("scheduled run of job %s failed to start", job_id)
