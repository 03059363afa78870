"""``python -m hpo.cli``: the ``hpo`` command without an installed script."""

from hpo.cli import main

main()
