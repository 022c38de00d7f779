"""A real one-node Slurm cluster for tests, as a session-scoped pytest fixture (conftest.py offers it).

Usage in a test module: take `slurm_cluster: SlurmCluster` as a test's argument. One cluster serves the
session's Slurm tests (their modules run in one pytest-xdist worker: munged is machine-wide).
It follows ../shared/docs/slurm-one-node.md (Debian 12, slurm-wlm 22.05, munge, as root). Everything the
cluster writes lives in one scratch directory; the daemons listen on ports picked free at start, so two
test runs (or a user's own Slurm) do not clash. Teardown stops only the daemons this fixture started, by
the pids they recorded, never by name.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PARTITION = "debug"
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_PIDFILE = Path("/run/munge/munged.pid")
INSTALL_ENV = "MIDMIX_TEST_INSTALL_SLURM"
BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "munged", "mungekey")
IDLE_TIMEOUT = 30.0
# Processes the cluster leaves behind as zombies; only these are reaped at teardown.
CLUSTER_PROCESSES = ("munged", "slurmctld", "slurmd", "slurmstepd")
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path.name} not written)"
    except OSError as e:
        return f"({path} unreadable: {e})"


@dataclass
class SlurmCluster:
    """A running one-node cluster; `env` is what its clients (sbatch, squeue, ...) must run with."""

    dir: Path
    env: dict[str, str]
    partition: str = PARTITION
    node: str = field(default_factory=socket.gethostname)

    @property
    def ctld_log(self) -> Path:
        return self.dir / "log" / "slurmctld.log"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}\n"
                f"node: {node_state(self)}\nslurmctld.log:\n{log_tail(self.ctld_log)}"
            )
        return r

    def sbatch(self, *args: str) -> str:
        """Submits a job and returns its id (for an array, the array's id)."""
        out = self.run("sbatch", "--parsable", *args).stdout.strip()
        return out.split(";")[0]  # --parsable prints "id[;cluster]"

    def queued(self, job_ids: list[str]) -> list[str]:
        """squeue's lines for those of the jobs still pending, running or completing (squeue -j drops a
        job from its output as soon as it ends, and errors once it knows none of the ids)."""
        r = self.run("squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T", check=False)
        if r.returncode != 0:
            if "Invalid job id" in r.stderr:
                return []
            raise RuntimeError(f"squeue failed: {r.stderr.strip()}")
        return [line for line in r.stdout.splitlines() if line.strip()]

    def job_states(self, job_id: str) -> dict[str, str]:
        """Final (or current) state of a job and, for an array, of each task as "<array id>_<task>",
        from scontrol, which keeps finished jobs for MinJobAge seconds; {} once they are purged."""
        r = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        states: dict[str, str] = {}
        for line in r.stdout.splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if "ArrayTaskId" in fields:
                states[f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"] = fields["JobState"]
            elif "JobId" in fields:
                states[fields["JobId"]] = fields["JobState"]
        return states

    def wait(self, job_ids: list[str] | str, timeout: float = 60.0) -> dict[str, str]:
        """Polls squeue until none of the jobs is queued or running, then returns their states (see
        job_states). Raises TimeoutError with the tail of slurmctld.log."""
        ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
        deadline = time.monotonic() + timeout
        while queued := self.queued(ids):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"jobs still queued after {timeout:.0f}s: {queued}\nslurmctld.log tail:\n{log_tail(self.ctld_log)}"
                )
            time.sleep(0.3)
        return {k: v for i in ids for k, v in self.job_states(i).items()}


def free_port() -> int:
    # The kernel hands out a free port; there is a small race until slurmctld binds it, acceptable here.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(name, state, parent pid) of a process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2 :].split()
    return stat[stat.index("(") + 1 : stat.rindex(")")], rest[0], int(rest[1])


def alive(pid: int, name: str) -> bool:
    """Whether `pid` is still a live process called `name` (a zombie or a reused pid is not ours)."""
    st = proc_stat(pid)
    return st is not None and st[0] == name[:15] and st[1] not in "ZX"


def subreaper(on: bool) -> bool:
    """Makes this process the subreaper of its descendants (Linux); returns the previous setting. The
    daemons fork away from their launcher: as our children rather than init's, their zombies can be
    reaped at once (pid 1 here reaps late, and `pgrep` meanwhile still lists them)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prev = ctypes.c_int(0)
        libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(prev), 0, 0, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
        return bool(prev.value)
    except (OSError, AttributeError):
        return False


def reap_cluster_zombies() -> None:
    """Collects our dead children that the cluster left (its daemons and job steps), and no others,
    so as not to take the exit status of a process someone else waits for."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := proc_stat(int(entry.name))):
            if st[2] == me and st[1] == "Z" and st[0] in CLUSTER_PROCESSES:
                try:
                    os.waitpid(int(entry.name), os.WNOHANG)
                except ChildProcessError:
                    pass


def running(name: str) -> list[int]:
    """Live processes called `name` (pgrep also lists zombies, e.g. a munged stopped a moment ago)."""
    r = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    return [pid for pid in map(int, r.stdout.split()) if alive(pid, name)]


def stop(pid: int | None, name: str, timeout: float = 15.0) -> None:
    """SIGTERM, wait for exit, then SIGKILL: only `pid`, and only while it still is `name`."""
    if pid is None or not alive(pid, name):
        return
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not alive(pid, name):
                return
            time.sleep(0.1)


def ensure_binaries() -> None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if not missing:
        return
    if os.environ.get(INSTALL_ENV) != "1":
        pytest.skip(f"Slurm is not installed (missing {', '.join(missing)}); set {INSTALL_ENV}=1 to apt-get it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, text=True)  # stale lists 404
    r = subprocess.run(["apt-get", "install", "-y", "slurm-wlm", "munge"], env=env, capture_output=True, text=True)
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if r.returncode != 0 or missing:
        pytest.skip(
            f"apt-get install -y slurm-wlm munge: rc {r.returncode}, still missing {', '.join(missing) or 'nothing'}: "
            f"{r.stderr.strip()[-500:]}"
        )


def start_munged(scratch: Path) -> int | None:
    """Makes sure a munged serves the default socket; returns its pid only if this call started it."""
    if running("munged"):
        # Someone else's (the system's, or another test run's): use it, never stop it.
        r = subprocess.run(["munge", "-n"], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"a munged runs but `munge -n` fails: {r.stderr.strip()}")
        return None
    user = pwd.getpwnam("munge")
    if not MUNGE_KEY.exists():
        subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
    # munged refuses to start unless its key and directories belong to it and the key is private.
    os.chown(MUNGE_KEY, user.pw_uid, user.pw_gid)
    MUNGE_KEY.chmod(0o400)
    for d in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
        os.chown(d, user.pw_uid, user.pw_gid)
    MUNGE_PIDFILE.unlink(missing_ok=True)  # a stale one would be mistaken for ours
    with open(scratch / "log" / "munged.out", "w") as out:
        # munged forks into the background; its output goes to a file, as a pipe would stay open.
        r = subprocess.run(
            ["/usr/sbin/munged"], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip
    deadline = time.monotonic() + 10
    pid = read_pid(MUNGE_PIDFILE)
    while pid is None and time.monotonic() < deadline:
        time.sleep(0.1)
        pid = read_pid(MUNGE_PIDFILE)
    if r.returncode != 0 or pid is None:
        stop(pid, "munged")
        pytest.skip(f"munged did not start (rc {r.returncode}): {log_tail(scratch / 'log' / 'munged.out')}")
    return pid


def write_conf(d: Path, host: str, ctld_port: int, slurmd_port: int) -> Path:
    mem_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    # A node that registers with less memory (or fewer CPUs) than configured is "inval": never claim more.
    real_memory = min(8000, mem_mib)
    conf = d / "slurm.conf"
    conf.write_text(
        f"""\
ClusterName=midmixtest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
# Batch jobs otherwise wait up to 3 s for a scheduling pass, which is most of a quick test's time.
SchedulerParameters=batch_sched_delay=0
# scontrol keeps finished jobs for MinJobAge seconds: long enough to read their states after wait(),
# short enough to keep the controller small. A dead slurmd is noticed within a minute.
MinJobAge=30
SlurmdTimeout=60
NodeName={host} CPUs={os.cpu_count() or 1} RealMemory={real_memory} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    )
    return conf


def start_daemon(name: str, conf: Path, env: dict[str, str], log_dir: Path) -> None:
    with open(log_dir / f"{name}.out", "w") as out:
        r = subprocess.run(
            [name, "-f", str(conf)], env=env,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"{name} exited with {r.returncode}: {log_tail(log_dir / f'{name}.out')}")


def node_state(cluster: SlurmCluster) -> str:
    try:
        r = subprocess.run(
            ["sinfo", "-h", "-N", "-n", cluster.node, "-o", "%T"], env=cluster.env, capture_output=True, text=True,
            timeout=10,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    return r.stdout.strip() if r.returncode == 0 else f"sinfo rc {r.returncode}: {r.stderr.strip()}"


def cancel_all(cluster: SlurmCluster) -> None:
    """Cancels every job of this private cluster and waits (a while) for them to end: a job's slurmstepd
    and its processes would outlive slurmd."""
    queued = cluster.run("squeue", "-h", "-o", "%A", check=False).stdout.split()
    if queued:
        cluster.run("scancel", *sorted(set(queued)), check=False)
    deadline = time.monotonic() + 10
    while cluster.run("squeue", "-h", "-t", "R,CG,S", check=False).stdout.strip() and time.monotonic() < deadline:
        time.sleep(0.3)


def scratch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("slurm")
    # slurmd puts unix sockets (limit 108 bytes) in its spool dir; a long --basetemp would break them.
    if len(str(d)) > 60:
        d = Path(tempfile.mkdtemp(prefix="slurm-"))
    return d


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Starts munged (unless one runs), slurmctld and slurmd for the session; stops what it started."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster needs root (it runs munged and slurmd)")
    ensure_binaries()
    d = scratch_dir(tmp_path_factory)
    for sub in ("state", "spool", "log"):
        (d / sub).mkdir()
    host = socket.gethostname()
    conf = write_conf(d, host, free_port(), free_port())
    # Run inside an outer Slurm job, its SLURM_*/SBATCH_* variables would steer our sbatch: drop them.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))}
    cluster = SlurmCluster(dir=d, env=dict(env, SLURM_CONF=str(conf)), node=host)
    munged_pid: int | None = None
    pids: dict[str, int | None] = {}
    was_subreaper = subreaper(True)
    try:
        munged_pid = start_munged(d)
        for name in ("slurmctld", "slurmd"):
            try:
                start_daemon(name, conf, cluster.env, d / "log")
            except RuntimeError:
                pids[name] = read_pid(d / f"{name}.pid")  # in case it forked before failing
                raise
            # Recorded once the daemon has written it (it removes the file when it exits).
            deadline = time.monotonic() + 5
            while (pid := read_pid(d / f"{name}.pid")) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            pids[name] = pid
        started = time.monotonic()
        deadline = started + IDLE_TIMEOUT
        while (state := node_state(cluster)) != "idle":
            # "inval": slurmd found less than the conf claims, which waiting does not mend.
            if time.monotonic() > deadline or state == "inval":
                pytest.skip(
                    f"Slurm node not idle (state {state!r} after {time.monotonic() - started:.0f}s)\n"
                    f"slurmctld.log:\n{log_tail(cluster.ctld_log)}\nslurmd.log:\n{log_tail(d / 'log' / 'slurmd.log')}"
                )
            time.sleep(0.3)
        yield cluster
    except RuntimeError as e:
        pytest.skip(f"Slurm daemons did not start: {e}\nslurmctld.log:\n{log_tail(cluster.ctld_log)}")
    finally:
        if pids.get("slurmctld") is not None and alive(pids["slurmctld"], "slurmctld"):
            try:
                cancel_all(cluster)
            except (subprocess.SubprocessError, OSError):
                pass  # the daemons are stopped all the same
        stop(pids.get("slurmd"), "slurmd")
        stop(pids.get("slurmctld"), "slurmctld")
        stop(munged_pid, "munged")
        reap_cluster_zombies()
        subreaper(was_subreaper)
