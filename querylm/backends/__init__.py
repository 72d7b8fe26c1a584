"""Backends: what a model gives the decoders (a vocabulary, next-token logits over cached prefixes)."""
