"""Metrics kept in files by several processes (``cove.common.metrics``): one scrape adds up
what each counted, a process that ended included, as the API does for the task manager and
conductor of its host. Real processes: where the values live is chosen when each imports
prometheus-client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cove.common.metrics import empty_directory

COUNT = """
import sys
from pathlib import Path
from cove.common.metrics import Metrics
m = Metrics.start(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    m.sent("cast", "taskmanager", "create_instance", 0.001, None)
m.task("create", 1.5, failed=sys.argv[2] == "1")
"""

SCRAPE = """
import sys
from pathlib import Path
from cove.common.metrics import Metrics
sys.stdout.write(Metrics.start(Path(sys.argv[1])).exposition().decode())
"""


def run(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def scrape(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(run(SCRAPE, str(directory))):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_one_scrape_adds_up_every_process_of_the_host(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    run(COUNT, str(directory), "3")
    run(COUNT, str(directory), "1")
    found = scrape(directory)
    sent = (("kind", "cast"), ("method", "create_instance"), ("topic", "taskmanager"))
    assert found[("cove_rpc_sent_total", sent)] == 4
    assert found[("cove_task_duration_seconds_count", (("task", "create"),))] == 2
    assert found[("cove_task_duration_seconds_sum", (("task", "create"),))] == 3.0
    assert found[("cove_task_failures_total", (("task", "create"),))] == 1
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    # A new run of the control plane starts from zero.
    empty_directory(directory)
    assert ("cove_rpc_sent_total", sent) not in scrape(directory)
