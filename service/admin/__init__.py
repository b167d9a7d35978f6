"""The policy editor: rules, roles, users, audit log, try a request, who can reach a path."""
