"""The batch runner and its journals (SQLite embedded, PostgreSQL shared)."""
