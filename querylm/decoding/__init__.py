"""Decoders: choosing each token among those the constraints allow."""
