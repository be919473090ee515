"""Scheduled work: the cleanup job, its scheduler and lease, the upload worker, the size cap.

``picgate.services.Services`` builds and wires them; nothing here reaches back into it.
"""
