"""IAM: users, roles, policies and OIDC/JWT tokens; ``iam.authz`` is the enforcement library."""
