"""The admin console's Jinja2 templates and static files (not code).

The folder sits at the top of the repository; the wheel ships it as the package
``picgate.admin_templates`` (``package-dir`` in pyproject.toml), and
``picgate.admin.rendering.templates_root`` finds it in a checkout and in an install alike.
"""
