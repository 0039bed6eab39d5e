"""Helpers that build tiny models for tests, offline."""
