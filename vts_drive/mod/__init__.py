"""Mixture-of-depths: most visual tokens skip the routed LLM layers."""
