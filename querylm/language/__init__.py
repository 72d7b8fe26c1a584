"""The query language: parse (source → IR) and compile (IR → a Python generator)."""
