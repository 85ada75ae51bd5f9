"""Identity and tenancy: users, organizations, memberships and roles, API keys, access and
refresh tokens. Resolves every request to a `core.principal.Principal`."""
