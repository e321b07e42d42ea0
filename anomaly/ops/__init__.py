"""The ops layer (see tests/test_architecture.py)."""
