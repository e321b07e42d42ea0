"""The io layer (see tests/test_architecture.py)."""
