"""``cove up``: the whole control plane on one machine.

It prepares the data directory, starts the embedded bus (unless a transport URL is set),
upgrades the control database, registers what is installed, creates the administrator on first
start and keeps ``<data>/clouds.yaml`` up to date, then runs the API, a task manager and a
conductor as child processes, restarting any that dies (and the bus, should it die). Ctrl-C
stops the control plane; database instances and their guest agents keep running and are
re-attached on the next start.

This module only sets the order: the one-time steps are :mod:`cove.cli.bootstrap`, the
processes :mod:`cove.cli.supervisor`. The bus starts before the control database is touched,
so a second ``cove up`` on the same data directory is refused before it touches that database.
"""

from __future__ import annotations

from cove.cli.bootstrap import banner, bootstrap, prepare_data_dir
from cove.cli.supervisor import Supervisor
from cove.common.settings import Settings


def up(settings: Settings) -> int:
    """Run the control plane until Ctrl-C or SIGTERM; return the exit status.

    Raises what :mod:`cove.cli.bootstrap` and :mod:`cove.cli.supervisor` raise (a
    ``CoveError`` for a configuration problem), after stopping whatever it had started.
    """
    prepare_data_dir(settings)
    with Supervisor(settings) as supervisor:
        supervisor.stop_on_signals()
        ready = bootstrap(settings)
        supervisor.when_api_answers(
            lambda: print(banner(settings, ready.versions, ready.access), flush=True)
        )
        status = supervisor.run()
    print("Cove stopped. Database instances keep running; 'make run' re-attaches them.")
    return status
