"""Cognito: the JWKS client and token verification (PyJWT lives only here)."""
