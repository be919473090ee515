"""Scheduled work only: the cleanup job's orchestration, its scheduler and lease, the upload
worker, and ``picgate cleanup``. What each step does lives in ``picgate.library``.

The container (``picgate.services``) builds and wires them; nothing here reaches back into it.
"""
