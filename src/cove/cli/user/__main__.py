"""``python -m cove.cli.user``: the same as the ``cove`` command."""

from cove.cli.user import main

if __name__ == "__main__":
    main()
