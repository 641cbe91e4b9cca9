"""The command-line layer: parses flags and calls library functions; no logic of its own."""
