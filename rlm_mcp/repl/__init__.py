"""The REPL: a worker subprocess per session and the host side that drives it."""
