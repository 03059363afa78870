"""Synthetic studies for the dashboard's tests and benchmarks (not part of the package).

- :mod:`bench.synthetic.demo`: the MNIST-like search space and a made-up
  training outcome per trial;
- :mod:`bench.synthetic.compression`: multi-objective compression trials
  (accuracy against model bytes, with the trainer's ``final_metrics``);
- :mod:`bench.synthetic.seeding`: writes such studies into a service database
  (through Optuna's ask/tell, or in bulk).

Importable from a checkout by ``tests/`` and ``bench/`` (the repository root is
on ``sys.path`` for both).
"""
