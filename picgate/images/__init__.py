"""Serving stored images: ``/images/{id}`` and ``/images/{id}.{ext}``."""
