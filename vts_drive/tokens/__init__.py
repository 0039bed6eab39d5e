"""Token reducers: which visual tokens of a window enter the LLM."""
