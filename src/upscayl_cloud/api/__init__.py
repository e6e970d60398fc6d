"""HTTP only: routes per spec tag, auth, errors, rate limits, schemas."""
