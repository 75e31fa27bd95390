"""Application pipelines built on attend's models and explanations (support, monitor, ...).

Each application is its own subpackage or module, imported on demand, so this file stays empty.
"""
