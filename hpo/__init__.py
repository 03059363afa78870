"""hpo: the part of hpo-service that users import.

* :class:`hpo.Client`: the typed REST client (studies, trials, the trial protocol);
* :class:`hpo.Trial`, :class:`hpo.TrialPruned`: Optuna's trial API over a lease, for
  objectives run by ``hpo worker --objective`` or ``--command``;
* :func:`hpo.current_trial`, :func:`hpo.run`: inside a ``--command`` training process;
* the contract shared by the server and the workers: :mod:`hpo.protocol` (wire
  bodies), :mod:`hpo.spec` (study specs), :mod:`hpo.settings` (the built-in
  trainer's settings), :mod:`hpo.schemas` (the API's read models).

Importing it loads neither torch nor any server package (fastapi, sqlalchemy,
optuna): ``service`` and ``workers`` both build on it and never on each other.
"""

from importlib import metadata

from hpo.child import current_trial, run
from hpo.client import Client
from hpo.spec import StudySpec
from hpo.trial import Trial, TrialPruned


def _package_version() -> str:
    """The installed distribution's version (``unknown`` when run from an uninstalled tree)."""
    try:
        return metadata.version("hpo-service")
    except metadata.PackageNotFoundError:
        return "unknown"


#: The version of the installed ``hpo-service`` distribution, as package metadata gives it.
__version__ = _package_version()

__all__ = ["Client", "StudySpec", "Trial", "TrialPruned", "__version__", "current_trial", "run"]
