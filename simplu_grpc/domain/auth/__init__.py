"""Who the caller is (Principal), the permission model, and authorization decisions."""
