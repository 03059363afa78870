"""``python -m hpo_cli``: the ``hpo`` command without an installed script."""

from hpo_cli import main

main()
