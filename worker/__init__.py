"""leadlex-sync worker: everything behind the queue.

`celery -A worker worker` finds the Celery app here as `worker.app`.
"""

from worker.celery_app import app

__all__ = ["app"]
