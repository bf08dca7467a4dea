"""Model archives: the ``.mar`` format of TorchServe and MMS 1.x, written and read safely."""
