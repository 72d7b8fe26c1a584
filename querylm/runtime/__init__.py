"""The runtime: drives a compiled query, asking constraints and decoders for each hole's value."""
