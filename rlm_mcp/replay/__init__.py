"""Re-running a session against its recorded sub-call answers: record.py reads the trace, backend.py answers
from it, run.py drives a fresh server and compares each step, report.py says where the outcome differs.
The `rlm-mcp replay` command (its flags, its exit codes) is rlm_mcp/commands/replay.py.
"""
