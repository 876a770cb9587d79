"""A node: the round logic of each learning mode and the async shell that runs it."""
