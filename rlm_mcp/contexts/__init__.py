"""Loading inputs by reference: resolving paths safely, selecting files, reading text."""
