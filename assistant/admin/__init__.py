"""The admin grammar every surface shares, and running its commands with authorization and audit."""
