"""The original DMS interface: ``.model`` archives, ``deep-model-export``, ``deep-model-server``,
``POST /{model}/predict``."""
