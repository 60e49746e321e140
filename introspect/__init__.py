"""introspect: the central authority for API credentials (RFC 7662 introspection)."""

__version__ = "0.1.0"
