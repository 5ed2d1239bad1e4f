"""Sparse autoencoders: where one comes from, choosing its gender latents, training one and measuring it."""
