"""The web console's files, served by ``cove.api.routers.console``."""
