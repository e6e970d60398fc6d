"""Tables, connections and migrations: the only room that knows the schema."""
