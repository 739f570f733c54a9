"""The local stack: installs and starts real Kafka, PostgreSQL, Redis and Prometheus without Docker.

``make up`` runs them (and the platform's own processes) under supervisord; the test fixtures start the very
same command lines directly on free ports in throw-away directories (:mod:`stack.runner`).
"""
