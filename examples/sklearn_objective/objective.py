"""An ordinary Optuna objective: scikit-learn on the digits data set that ships with it.

Nothing here knows about hpo-service. The same function runs under
``study.optimize`` (``python objective.py``) and on the fleet, unchanged::

    hpo study create examples/sklearn_objective/study.yaml
    hpo worker --objective examples.sklearn_objective.objective:objective \\
               --workload sklearn-digits

The study declares no ``space``: each ``suggest_*`` below is sampled on the
server by the study's sampler when the objective first asks for it
(define-by-run), conditional parameters included.
"""

from __future__ import annotations

from functools import cache

from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import cross_val_score
from sklearn.svm import SVC


@cache
def _data() -> tuple:
    digits = load_digits()
    return digits.data, digits.target


def objective(trial) -> float:  # an optuna.Trial or an hpo.Trial
    """Mean 3-fold cross-validated accuracy of an SVC or a random forest."""
    x, y = _data()
    classifier = trial.suggest_categorical("classifier", ["svc", "random_forest"])
    if classifier == "svc":
        c = trial.suggest_float("svc_c", 1e-3, 1e3, log=True)
        gamma = trial.suggest_float("svc_gamma", 1e-5, 1e-1, log=True)
        model = SVC(C=c, gamma=gamma)
    else:
        depth = trial.suggest_int("rf_max_depth", 2, 32, log=True)
        trees = trial.suggest_int("rf_n_estimators", 10, 60, step=10)
        model = RandomForestClassifier(max_depth=depth, n_estimators=trees, random_state=0)
    return float(cross_val_score(model, x, y, cv=3).mean())


if __name__ == "__main__":  # the same objective with plain Optuna, for comparison
    import optuna

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=20)
    print(study.best_trial.params, study.best_value)
