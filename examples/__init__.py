"""Examples of tuning your own model on the fleet (see examples/README.md)."""
