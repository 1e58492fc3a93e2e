"""A single-node SLURM cluster on this machine, for the cluster tests (root only).

:func:`start_cluster` writes a slurm.conf for one node at 127.0.0.1 into a temporary folder,
starts its own munged (own key and socket), slurmctld and slurmd in the foreground as child
processes, waits until the node takes jobs, and :meth:`SlurmCluster.stop` ends exactly those
processes again. Debian's slurm-wlm + munge come from ``.ci/install-slurm``.

Choices that make SLURM run in a container without cgroups or a database (they are the
test's, not a recommendation for a real cluster; see profiles/slurm/config.yaml):
``proctrack/linuxproc`` and ``task/none`` (no cgroup), no accounting storage (no slurmdbd,
so ``sacct`` cannot see jobs and the executor plugin must poll with ``squeue``), and a node
declared with more CPUs and memory than the machine has (``config_overrides``), so that the
pipeline's resource requests fit.

The configuration is installed as ``/etc/slurm/slurm.conf`` (any existing file is backed up
and restored): the executor plugin's job step drops ``SLURM_*`` variables before calling
``srun``, so a ``SLURM_CONF`` pointing elsewhere would not reach it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "sinfo")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
NODE = "mnmnode"
PARTITION = "mnmtest"


def missing_commands() -> list[str]:
    """SLURM and munge commands that are not installed."""
    return [name for name in DAEMONS if shutil.which(name) is None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_conf(folder: Path, cpus: int, memory_mb: int) -> str:
    """slurm.conf text for one node at 127.0.0.1 whose state lives in ``folder``."""
    return "\n".join([
        "ClusterName=mnmtest",
        f"SlurmctldHost={socket.gethostname().split('.')[0]}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={folder / 'munge.socket'}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SchedulerType=sched/builtin",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SlurmdParameters=config_overrides",
        "ReturnToService=2",
        # finished jobs stay visible to squeue for 5 minutes: the plugin's squeue status
        # check needs to see them end
        "MinJobAge=300",
        "SchedulerParameters=sched_interval=1",
        f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


@dataclass
class SlurmCluster:
    """Handle on the running daemons (see :func:`start_cluster`)."""

    folder: Path
    processes: dict = field(default_factory=dict)
    backup: Path | None = None
    installed_conf: bool = False

    def log_tail(self, chars: int = 3000) -> str:
        """The end of every daemon log, for failure messages."""
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = self.folder / name
            if path.is_file():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel this cluster's jobs, stop the daemons this handle started (by process id)
        and restore /etc/slurm/slurm.conf."""
        if self.processes.get("slurmctld") is not None:
            subprocess.run(["scancel", "--quiet", f"--partition={PARTITION}"],
                           capture_output=True, timeout=15, check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self.installed_conf:
            SYSTEM_CONF.unlink(missing_ok=True)
            if self.backup is not None:
                shutil.move(self.backup, SYSTEM_CONF)
            self.installed_conf = False


def _wait(predicate, timeout: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in cluster.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}\n"
                                   f"{cluster.log_tail()}")
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}\n{cluster.log_tail()}")


def _node_idle() -> bool:
    result = subprocess.run(["sinfo", "-h", "-n", NODE, "-o", "%t"], capture_output=True,
                            text=True)
    return result.returncode == 0 and result.stdout.strip() in ("idle", "mix")


def start_cluster(folder: Path, cpus: int = 8, memory_mb: int = 64000,
                  timeout: float = 30.0) -> SlurmCluster:
    """Start munged, slurmctld and slurmd for one node; return when the node is idle."""
    folder = Path(folder)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    cluster = SlurmCluster(folder)
    try:
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        cluster.processes["munged"] = subprocess.Popen(
            ["munged", "--foreground", "--force", f"--key-file={key}",
             f"--socket={folder / 'munge.socket'}", f"--pid-file={folder / 'munged.pid'}",
             f"--log-file={folder / 'munged.log'}", f"--seed-file={folder / 'munged.seed'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        _wait(lambda: (folder / "munge.socket").exists(), timeout, "munged", cluster)
        conf = folder / "slurm.conf"
        conf.write_text(slurm_conf(folder, cpus, memory_mb))
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        if SYSTEM_CONF.exists():
            cluster.backup = folder / "slurm.conf.system-backup"
            shutil.copy2(SYSTEM_CONF, cluster.backup)
        shutil.copy(conf, SYSTEM_CONF)
        cluster.installed_conf = True
        cluster.processes["slurmctld"] = subprocess.Popen(
            ["slurmctld", "-D", "-i"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        cluster.processes["slurmd"] = subprocess.Popen(
            ["slurmd", "-D", "-N", NODE], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait(_node_idle, timeout, f"node {NODE} to become idle", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster
