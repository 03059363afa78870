"""The trial state machine: what workers do to trials, and what the server does for them.

States and the allowed transitions are :mod:`service.trials.states`. The steps:

* :mod:`~service.trials.leasing`: hand out trials (study choice, reserve, sample, lease);
* :mod:`~service.trials.keepalive`: heartbeat and report (per-step values, pruning);
* :mod:`~service.trials.suggesting`: define-by-run parameters sampled on request;
* :mod:`~service.trials.finishing`: complete, fail and abandon, exactly once per lease;
* :mod:`~service.trials.reaping`: expired leases, orphans and repairs.

Every entry point takes the app's :class:`~service.core.context.AppContext` and raises
domain errors (:class:`~service.core.errors.LeaseNotFound` 404,
:class:`~service.core.errors.LeaseExpired` 409, :class:`~service.core.errors.TrialFinished`
409), which the API maps to HTTP in one place.
"""

from service.trials.finishing import abandon, complete, fail, recover
from service.trials.keepalive import heartbeat, report
from service.trials.leasing import lease, long_poll
from service.trials.reaping import reap_all
from service.trials.suggesting import suggest

__all__ = [
    "abandon",
    "complete",
    "fail",
    "heartbeat",
    "lease",
    "long_poll",
    "reap_all",
    "recover",
    "report",
    "suggest",
]
