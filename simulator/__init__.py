"""Synthetic market simulator: realistic, reproducible, fast ticks into Kafka, files and a realism report.

Modules: :mod:`~simulator.models` (maths), :mod:`~simulator.microstructure` (quotes, volume),
:mod:`~simulator.universe` (config), :mod:`~simulator.session` (clock), :mod:`~simulator.engine` (tick
batches), :mod:`~simulator.encode` (JSON), :mod:`~simulator.producer` / :mod:`~simulator.stream` (Kafka),
:mod:`~simulator.export` (files), :mod:`~simulator.report` (stylized facts), ``__main__`` (CLI).
"""
