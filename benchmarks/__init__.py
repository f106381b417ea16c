"""What the bot costs: `python -m benchmarks.run` drives the real bot process against fakes on 127.0.0.1."""
