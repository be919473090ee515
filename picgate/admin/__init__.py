"""The admin console: pages, JSON API, sessions and CSRF (see ``routes.router``)."""
