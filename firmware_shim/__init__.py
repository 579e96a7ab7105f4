"""firmware_shim."""
