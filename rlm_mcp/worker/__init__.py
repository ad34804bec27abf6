"""The worker side: everything that runs in the locked-down child process (see tests/test_boundary.py)."""
