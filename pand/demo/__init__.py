"""The built-in synthetic demo: ``python -m pand.demo`` (``make demo``) runs every stage end to end (see README)."""
