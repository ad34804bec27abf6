"""What the server learns across sessions, kept in the workspace: a handbook of behaviors distilled from
earlier sessions (how to work), findings per input (what was found, keyed by the input's content digest),
and a cache of sub-call answers.

All of it is text that models wrote after reading untrusted inputs. It is offered to models, bounded and
marked as such, and nothing here is ever executed or read as a setting: the server's only use of it is to
show it (escaped) and to match queries against it.
"""
