"""Local development stack (PostgreSQL, Citrus emulator, moto). Production code never imports it."""
