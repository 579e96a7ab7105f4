"""cloud_collector."""
