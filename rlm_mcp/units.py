"""Sizes, spelled one way on both sides of the boundary."""

MiB = 1024 * 1024
# A rough figure for English and code, for estimates only (chunking by tokens, budgets, a load's size); it
# errs low on dense scripts, which the router's margins allow for. Not a tokenizer.
CHARS_PER_TOKEN = 4
