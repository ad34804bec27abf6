"""The bridge between the server and its REPL worker: what both sides must agree on, and nothing else.

`frames` is how a message travels (length-prefixed JSON, bounded); `ops` is what a message may say (the
names defined once, one TypedDict per message). Standard library only: the worker imports this package, so
everything in it is within reach of model-written code (tests/test_boundary.py).
"""
