"""The evaluation layer (see tests/test_architecture.py)."""
