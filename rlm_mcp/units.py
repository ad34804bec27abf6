"""Sizes, spelled one way on both sides of the boundary."""

MiB = 1024 * 1024
