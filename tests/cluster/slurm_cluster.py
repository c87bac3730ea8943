"""A real single-node SLURM cluster on localhost for the tests (Debian's slurmctld, slurmd, munge).

State and logs live in one folder. The configuration must be at /etc/slurm/slurm.conf, because
the plugin's job step drops SLURM_CONF before it calls srun; the file is written only where none
exists (or one written here), and removed at the end. Only the daemons started here are stopped
(by their pid); a munged that was already running is used and left running. Ports are fixed:
one such cluster per machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")
CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by tests/cluster/slurm_cluster.py\n"
MUNGE_SOCKET_DIR = Path("/run/munge")


class ClusterUnavailable(RuntimeError):
    """The daemons cannot start here; the message says why (the test is skipped with it)."""


def _run(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_pid_file(path: Path, log: Path, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().split()[0])
        time.sleep(0.2)
    tail = log.read_text()[-2000:] if log.exists() else "(no log)"
    raise ClusterUnavailable(f"{path.name} did not appear in {timeout:.0f} s; {log}:\n{tail}")


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterUnavailable("cannot read MemTotal from /proc/meminfo")


class LocalSlurm:
    """`with LocalSlurm(folder) as cluster:` starts the cluster; `cluster.env` reaches it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.conf = CONF
        self.wrote_conf = False
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.started: list[tuple[str, int]] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_conf(self) -> None:
        if self.conf.exists() and not self.conf.read_text().startswith(MARK):
            raise ClusterUnavailable(f"{self.conf} exists: this machine has a SLURM of its own")
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.wrote_conf = True
        # Memory is declared but not enforced (CR_Core); no accounting daemon, so no sacct:
        # finished jobs stay listed by `scontrol show job` for a day (MinJobAge).
        self.conf.write_text(
            MARK
            + f"""ClusterName=abmilx
SlurmctldHost={self.node}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={self.folder}/state
SlurmdSpoolDir={self.folder}/spool
SlurmctldPidFile={self.folder}/slurmctld.pid
SlurmdPidFile={self.folder}/slurmd.pid
SlurmctldLogFile={self.folder}/slurmctld.log
SlurmdLogFile={self.folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=86400
KillWait=5
NodeName={self.node} CPUs={self.cpus} RealMemory={_memory_mb() * 3 // 4} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _munge_works(self) -> bool:
        try:
            credential = _run("munge", "-n", timeout=10)
            return (
                credential.returncode == 0
                and subprocess.run(
                    ["unmunge"], input=credential.stdout, capture_output=True, text=True
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _start_munge(self) -> None:
        if self._munge_works():
            return
        MUNGE_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
        started = _run("runuser", "-u", "munge", "--", "munged")
        if started.returncode != 0:
            raise ClusterUnavailable(f"munged did not start: {started.stderr.strip()}")
        pid_file = MUNGE_SOCKET_DIR / "munged.pid"
        self.started.append(("munged", _wait_for_pid_file(pid_file, Path("/var/log/munge"))))
        if not self._munge_works():
            raise ClusterUnavailable("munged started but `munge -n | unmunge` fails")

    def _start(self, daemon: str) -> None:
        busy = _run("scontrol", "ping", env=self.env) if daemon == "slurmctld" else None
        if busy is not None and "UP" in busy.stdout:
            raise ClusterUnavailable(f"a slurmctld already answers on {self.node}")
        started = _run(daemon, "-f", str(self.conf), env=self.env)
        if started.returncode != 0:
            raise ClusterUnavailable(f"{daemon} did not start: {started.stderr.strip()}")
        pid = _wait_for_pid_file(self.folder / f"{daemon}.pid", self.folder / f"{daemon}.log")
        self.started.append((daemon, pid))

    def _wait_idle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = _run("sinfo", "-h", "-N", "-o", "%T", env=self.env).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        log = (self.folder / "slurmd.log").read_text()[-2000:]
        raise ClusterUnavailable(
            f"node {self.node} is {state!r}, not idle, after {timeout} s:\n{log}"
        )

    def __enter__(self) -> LocalSlurm:
        missing = [name for name in DAEMONS if shutil.which(name) is None]
        if missing:
            raise ClusterUnavailable(
                f"not installed: {', '.join(missing)} (make slurm-test installs Debian's "
                "slurmctld, slurmd, slurm-client and munge)"
            )
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting slurmd needs root")
        try:
            self._write_conf()
            self._start_munge()
            self._start("slurmctld")
            self._start("slurmd")
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def submitted_jobs(self) -> list[dict[str, str]]:
        """Every batch job the controller accepted since it started, oldest first: ``JobId``,
        ``Comment`` (the executor plugin writes ``rule_<rule or group job name>...``) and
        ``JobState``. Their number is checked against the controller log's accepted ``sbatch``
        requests, so a job that left the listing would not go uncounted."""
        shown = _run("scontrol", "show", "job", "--oneliner", env=self.env)
        if shown.returncode != 0:
            raise RuntimeError(f"scontrol show job failed: {shown.stderr.strip()}")
        jobs = []
        for line in shown.stdout.splitlines():
            fields = dict(re.findall(r"(?:^|\s)(JobId|Comment|JobState)=(\S*)", line))
            if "JobId" in fields:
                jobs.append({key: fields.get(key, "") for key in ("JobId", "Comment", "JobState")})
        log = (self.folder / "slurmctld.log").read_text()
        accepted = re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", log)
        if sorted(accepted, key=int) != sorted((job["JobId"] for job in jobs), key=int):
            raise RuntimeError(
                f"slurmctld accepted jobs {accepted}, scontrol lists {[j['JobId'] for j in jobs]}"
            )
        return sorted(jobs, key=lambda job: int(job["JobId"]))

    def stop(self) -> None:
        """Cancel what is left in the queue, then stop the daemons started here, newest first."""
        if any(name == "slurmctld" for name, _ in self.started):
            _run("scancel", "--full", "--user", "root", env=self.env)
        for _name, pid in reversed(self.started):
            if _pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.started.clear()
        if self.wrote_conf:
            self.conf.unlink(missing_ok=True)
            self.wrote_conf = False
