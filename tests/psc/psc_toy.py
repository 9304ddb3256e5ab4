"""Shared constants of the PSC tests (a uniquely named module: test files must not import ``conftest``)."""
TOY_CLASSES = ["red cardinal", "blue jay", "green parakeet", "yellow warbler"]
