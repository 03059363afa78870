"""``hpo study ...``: the study commands, built on :class:`hpo.Client` (base install).

The ``hpo`` command that puts them together with ``hpo server`` and ``hpo worker``
is :mod:`hpo_cli`, outside the contract package.
"""
