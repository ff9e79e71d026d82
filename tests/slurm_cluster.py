"""A throwaway one-node Slurm cluster for the Slurm executor's tests: munged, slurmctld and slurmd
started from a private folder (own key, config, spool, ports), found through ``SLURM_CONF``.

Needs Debian's ``slurmctld slurmd slurm-client munge`` packages and root (slurmd runs jobs as their
user); the test command installs them where apt is usable."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from corpusfilter import Detector, register
from corpusfilter.blocks.base import NoParams

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")
PARTITION = "cftest"


def missing() -> str | None:
    """Why a cluster cannot be started here, or None."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"Slurm is not installed ({', '.join(absent)} missing; apt-get install slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "slurmd needs root"
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextmanager
def cluster(root: Path) -> Iterator[dict[str, str]]:
    """Start the daemons under ``root``; yields the environment (``SLURM_CONF``) that reaches them."""
    root.mkdir(parents=True, exist_ok=True)
    munge = root / "munge"
    munge.mkdir(mode=0o700, exist_ok=True)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for d in ("spool/ctld", "spool/d", "log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    ctld_port, d_port = _free_ports(2)
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=cftest
SlurmctldHost={host}
AuthType=auth/munge
AuthInfo=socket={munge}/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={root}/spool/ctld
SlurmdSpoolDir={root}/spool/d
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={host} CPUs={os.cpu_count() or 1} RealMemory=4000 State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pids: list[Path] = []
    try:
        subprocess.run(
            [
                "munged",
                "--force",
                f"--key-file={key}",
                f"--socket={munge}/munge.socket",
                f"--pid-file={munge}/munged.pid",
                f"--log-file={munge}/munged.log",
                f"--seed-file={munge}/seed",
            ],
            check=True,
        )
        pids.append(munge / "munged.pid")
        for daemon, pid in (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid")):
            subprocess.run([daemon, "-f", str(conf)], check=True, env=env)
            pids.append(root / pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the node registers with the controller
            state = subprocess.run(
                ["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, env=env
            ).stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the test Slurm node did not come up (state {state!r}; logs in {root}/log)")
        yield env
    finally:
        if len(pids) == 3:  # jobs a failed test left behind go first, then the daemons
            subprocess.run(["scancel", f"--partition={PARTITION}"], env=env, capture_output=True)
            time.sleep(1)
        for pid_file in reversed(pids):
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass


@register("test_fails_in_job", version=1)
class FailsInJob(Detector):
    """Marks documents; raises inside a job whose environment has CF_TEST_FAIL set and whose batch
    holds the word 'takeover' (one task of the tests' two-shard corpus), and sleeps CF_TEST_SLEEP
    seconds. Jobs import it by name, so the tests put the repository on their PYTHONPATH."""

    Params = NoParams
    fields: ClassVar[dict[str, pa.DataType]] = {"seen": pa.bool_()}

    def score(self, texts: pa.StringArray) -> dict[str, list[bool]]:
        if os.environ.get("CF_TEST_FAIL") and any("takeover" in t for t in texts.to_pylist()):
            raise RuntimeError("failing on purpose (CF_TEST_FAIL)")
        time.sleep(float(os.environ.get("CF_TEST_SLEEP", 0)))  # a task still running when cancelled
        return {"seen": [True] * len(texts)}
