"""DMS's stand-in for TorchServe's ``ts`` package (used only when TorchServe is not installed)."""
