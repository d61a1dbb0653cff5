"""Adapters: one module per external system; each translates its library errors into domain errors."""
