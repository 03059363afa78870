"""hpo: the part of hpo-service that users import.

The wire contract between the server and its workers (:mod:`hpo.protocol`),
the study spec schema (:mod:`hpo.spec`), the reference trainer's settings
(:mod:`hpo.settings`), the read models of the API (:mod:`hpo.schemas`) and the
typed REST client (:class:`hpo.Client`). Importing it loads neither torch nor
any server package (fastapi, sqlalchemy, optuna): ``service`` and ``workers``
both build on it and never on each other.
"""

from hpo.client import Client
from hpo.spec import StudySpec

__all__ = ["Client", "StudySpec"]
