"""Metadata storage: engine, models, migrations and the thread-offloaded session runner."""
