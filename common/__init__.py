"""Code shared by every service: settings base, the project's exceptions, logging and metrics helpers."""
