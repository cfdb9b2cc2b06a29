"""Command-line interface: `allot serve`, `migrate`, `users`, `tokens`, `demo`, `check`."""
