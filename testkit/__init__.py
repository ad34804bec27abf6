"""What the tests and the benchmarks share: fake providers on loopback, and where the pinned CLIs are.

Not part of the package (the wheel holds rlm_mcp/ only); imported from a checkout.
"""
