"""Bridges to other frameworks (one module each, imported only when used)."""
