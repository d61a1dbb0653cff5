"""Domain: validation, permissions and the rules that do not depend on any store."""
