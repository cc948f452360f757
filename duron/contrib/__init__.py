"""Batteries that plug into Duron's protocols (storage backends)."""
