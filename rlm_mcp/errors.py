"""Errors whose message is meant for the root model: what was wrong and what to do instead."""


class UserError(ValueError):
    """Bad input to a tool. The server turns it into an isError result; the session is unaffected."""
