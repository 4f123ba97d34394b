"""Task values of a job run: dbutils.jobs.taskValues.set/get and {{tasks.<task>.values.<key>}} references.

A running task sets values (JSON, at most 48 KiB each, 250 per run); any task of the same run
reads them by task key and key, the latest set winning. They live as long as the run.
"""
from __future__ import annotations

import json
import re

from sqlalchemy import func, select

from brickyard.errors import BrickyardError, invalid, not_found
from brickyard.services.common import now_ms
from brickyard.services.users import Principal
from brickyard.store.jobs_models import JobTaskValue
from brickyard.store.models import JobTaskRun

MAX_VALUE_BYTES = 48 * 1024
MAX_VALUES_PER_RUN = 250
MAX_KEY_CHARS = 256
VALUE_REF_RE = re.compile(r"\{\{\s*tasks\.([\w-]+)\.values\.([\w.-]+?)\s*\}\}")


class TaskValuesApi:
    """Mixed into JobService (which provides store and _run)."""

    def set_task_value(self, caller: Principal, task_run_id: object, key: object, value: object) -> None:
        if not isinstance(key, str) or not key:
            raise invalid("key must be a non-empty string.")
        if len(key) > MAX_KEY_CHARS:
            raise invalid(f"key must be at most {MAX_KEY_CHARS} characters.")
        if not isinstance(value, str):
            raise invalid("value must be the task value's JSON text.")
        try:
            json.loads(value)
        except ValueError:
            raise invalid("value is not valid JSON.") from None
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise invalid(f"The task value {key!r} is {len(value.encode())} bytes as JSON; the limit is "
                          f"{MAX_VALUE_BYTES} bytes (48 KiB).")
        with self.store.session() as sess:
            run, task = self._run(sess, caller, task_run_id)
            if task is None:
                raise invalid(f"Run {run.run_id} is a job run; task values are set by one of its task runs.")
            if task.life_cycle_state != "RUNNING":
                raise BrickyardError("INVALID_STATE", f"Task run {task.run_id} is {task.life_cycle_state}; only a "
                                     "running task sets task values.")
            row = sess.get(JobTaskValue, (run.run_id, task.task_key, key))
            if row is None:
                count = sess.scalar(select(func.count()).select_from(JobTaskValue)
                                    .where(JobTaskValue.run_id == run.run_id))
                if count >= MAX_VALUES_PER_RUN:
                    raise invalid(f"A job run can have at most {MAX_VALUES_PER_RUN} task values.")
                row = JobTaskValue(run_id=run.run_id, task_key=task.task_key, key=key)
                sess.add(row)
            row.value, row.task_run_id, row.set_time = value, task.run_id, now_ms()

    def get_task_value(self, caller: Principal, task_run_id: object, task_key: object, key: object) -> dict:
        """{"value": <JSON text>} or {} when the task did not set `key`; unknown task keys are an error."""
        if not isinstance(task_key, str) or not task_key:
            raise invalid("task_key must be a non-empty string.")
        if not isinstance(key, str) or not key:
            raise invalid("key must be a non-empty string.")
        with self.store.session() as sess:
            run, _ = self._run(sess, caller, task_run_id)
            keys = set(sess.scalars(select(JobTaskRun.task_key).where(JobTaskRun.parent_run_id == run.run_id)))
            if task_key not in keys:
                raise not_found(f"Task {task_key!r} does not exist in run {run.run_id}; its tasks are "
                                f"{', '.join(sorted(keys))}.")
            row = sess.get(JobTaskValue, (run.run_id, task_key, key))
            return {"value": row.value} if row is not None else {}

    def fill_task_value_refs(self, run_id: int, task: dict) -> dict:
        """The task with {{tasks.<task>.values.<key>}} in its parameters replaced by the values set so far.

        Strings are inserted as they are, other values as their JSON. A reference to a value that was
        not set fails the task (BrickyardError).
        """
        with self.store.session() as sess:
            rows = {(r.task_key, r.key): r.value for r in sess.scalars(
                select(JobTaskValue).where(JobTaskValue.run_id == run_id))}

        def sub(text: str) -> str:
            def one(m: re.Match) -> str:
                found = rows.get((m.group(1), m.group(2)))
                if found is None:
                    raise invalid(f"Cannot resolve the dynamic value reference {m.group(0)}: task "
                                  f"{m.group(1)!r} did not set the task value {m.group(2)!r}.")
                value = json.loads(found)
                return value if isinstance(value, str) else json.dumps(value)
            return VALUE_REF_RE.sub(one, text)

        task = json.loads(json.dumps(task))
        nb = task.get("notebook_task")
        if nb and nb.get("base_parameters"):
            nb["base_parameters"] = {k: sub(v) if isinstance(v, str) else v for k, v in nb["base_parameters"].items()}
        py = task.get("spark_python_task")
        if py and py.get("parameters"):
            py["parameters"] = [sub(v) if isinstance(v, str) else v for v in py["parameters"]]
        return task
