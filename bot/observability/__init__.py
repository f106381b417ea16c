"""What the bot shows its admins' monitoring: Prometheus metrics, and the listener that serves them."""
