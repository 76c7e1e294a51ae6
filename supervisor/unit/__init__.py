"""Unit files: schema, quantities, loading and the spec hash."""
