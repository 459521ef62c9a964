"""The rules of the service, with no I/O: models, errors, access, retention, naming.

The bottom layer: it imports nothing else of the package (``make lint`` checks).
"""
