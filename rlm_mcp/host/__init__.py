"""The host side of a worker: starting it, talking to it over the protocol, stopping it."""
