"""The use cases; HTTP-free. Routes and the CLI call these, never the tables."""
