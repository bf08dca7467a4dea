"""Built-in handlers. Each follows the MMS/TorchServe contract: ``handle(data, context)``."""
