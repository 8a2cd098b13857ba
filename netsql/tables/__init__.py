"""Virtual tables: one module per table, each with its declaration and collector."""
