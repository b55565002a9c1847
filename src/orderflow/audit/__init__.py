"""The tamper-evident, hash-chained history of every order."""
