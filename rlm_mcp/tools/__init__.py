"""The tools, each declared once: what it takes, what it returns, and the text a model reads of its answer.

`declarations` holds each tool's name, description, parameters and hints; `schemas` its structured result;
`render` the text a result becomes. The MCP surface registers them, the engine's root loop offers them to the
model it drives, the session builds the results, replay checks recorded arguments against them: all of these
read this package, and it imports none of them back (tests/test_boundary.py: no package cycle).
"""
