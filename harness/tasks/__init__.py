"""Built-in offline tasks: ground truth known, nothing downloaded."""

from harness.registry import Registry
from harness.tasks.base import Task

TASKS: Registry[type[Task]] = Registry("task", entry_point_group="spo_harness.tasks")

from harness.tasks.bandit import BanditTask  # noqa: E402
from harness.tasks.sentiment import SentimentTask  # noqa: E402

TASKS.register("bandit")(BanditTask)
TASKS.register("sentiment")(SentimentTask)

__all__ = ["TASKS", "Task", "BanditTask", "SentimentTask"]
