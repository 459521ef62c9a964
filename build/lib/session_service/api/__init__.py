"""HTTP only: routing, request/response models, identity, problem+json, workflow starts."""
