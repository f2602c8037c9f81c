"""The Redis datastore: ACL users, root as the ``default`` user, AOF persistence."""
