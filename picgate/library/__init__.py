"""The image library: the one owner of the ``images`` row and of an image's life.

``ImageLibrary`` (``library.py``) saves, gets, lists and deletes; ``rows.py`` holds every
statement on the table. Below it, ``picgate.storage`` moves bytes and knows no rows; above it,
the gateway, the admin console and the jobs call the library and never touch the table.
"""
