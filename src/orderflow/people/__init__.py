"""People and roles: named users, personal API tokens, console sessions, four-eyes approvals."""
