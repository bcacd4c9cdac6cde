"""Scale figures and the capacity model (issue 14): ``python -m bench.scale``."""
