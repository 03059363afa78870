"""A module that does not import (``--objective`` must exit at start, naming it)."""

raise ImportError("this module is broken on purpose")
