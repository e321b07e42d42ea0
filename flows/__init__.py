"""Prefect flows: thin scheduled orchestration over the ``anomaly`` library.

The library logs with the standard ``logging`` module; naming its logger
here makes Prefect forward those records to the run's logs too.
"""

import os

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "anomaly")
