"""Artifacts: the files a trial makes (checkpoints, its final model, user files).

The bytes live in an Optuna artifact store (:mod:`service.artifacts.store`);
Optuna's own metadata (``artifacts:<id>`` system attributes) is written for each,
so ``optuna.artifacts`` and optuna-dashboard see them; ``hpo_artifacts`` rows add
kind, step, size, hash and the commit (:mod:`service.artifacts.records`).
Uploads and downloads stream (:mod:`service.artifacts.transfer`); retention
deletes what no live lease or kept trial needs (:mod:`service.artifacts.retention`).
"""
