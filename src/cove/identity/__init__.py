"""The embedded identity service: a Keystone v3 subset (tokens, projects, users, roles).

:mod:`.passwords` hashes passwords, :mod:`.tokens` signs and checks tokens, :mod:`.service`
owns the identity tables and answers the questions the Keystone endpoints and ``cove-manage``
ask. It imports ``common`` and ``db``; the API serves it under ``/identity/v3``.
"""
