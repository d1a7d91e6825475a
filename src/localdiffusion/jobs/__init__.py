"""Jobs layer: every generation request becomes a job in a persistent queue, run by a worker.

    queue = SQLiteJobQueue(db)           # the embedded default; JobQueue is the interface
    worker = Worker(queue, engine, events)
    worker.start()
    job = queue.submit(recipe, owner_id=db.local_owner_id, client="tab-1")
"""

from localdiffusion.jobs.events import Event, EventBus
from localdiffusion.jobs.queue import Job, JobQueue, JobStatus, SQLiteJobQueue
from localdiffusion.jobs.worker import Worker

__all__ = ["Event", "EventBus", "Job", "JobQueue", "JobStatus", "SQLiteJobQueue", "Worker"]
