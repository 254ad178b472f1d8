"""Stand-ins for SLURM's sbatch, srun, sacct, squeue, scancel and scontrol, for the cluster tests.

Linked under those names into a directory on PATH, they keep their queue in ``$STUB_SLURM_DIR``:
``sbatch`` files the script (a copy in ``ID.sbatch``) and prints its id, then runs each array task in
the background (one runner process) with SLURM's variables set; ``srun`` runs its command once per
task; ``sacct`` reads the states. With ``STUB_SLURM_HOLD`` set, sbatch queues without running
(``slurm_stub.py release`` runs what is pending)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

DIR = Path(os.environ.get("STUB_SLURM_DIR", "."))
QUEUE = DIR / "queue.json"


def load():
    return json.loads(QUEUE.read_text()) if QUEUE.is_file() else {"next": 1000, "jobs": {}}


def save(queue):
    tmp = QUEUE.with_suffix(".tmp")
    tmp.write_text(json.dumps(queue, indent=1))
    os.replace(tmp, QUEUE)


def set_state(job, task, state):
    queue = load()  # one runner at a time per test: read-modify-write is enough
    queue["jobs"][job]["tasks"][str(task)] = state
    save(queue)


def directives(script):
    out = {}
    for line in Path(script).read_text().splitlines():
        m = re.match(r"#SBATCH --([\w-]+)(?:=(.*))?$", line.strip())
        if m:
            out[m.group(1)] = m.group(2) if m.group(2) is not None else True
    return out


def sbatch(args):
    script = args[-1]
    d = directives(script)
    queue = load()
    job = str(queue["next"])
    queue["next"] += 1
    tasks = range(int(d["array"].split("%")[0].split("-")[1]) + 1) if "array" in d else [0]
    queue["jobs"][job] = {"script": str(Path(script).resolve()), "array": "array" in d, "directives": d,
                          "tasks": {str(t): "PENDING" for t in tasks}}
    save(queue)
    (DIR / f"{job}.sbatch").write_text(Path(script).read_text())
    print(f"Submitted batch job {job}")
    if not os.environ.get("STUB_SLURM_HOLD"):
        start(job)


def start(job, only=None):
    subprocess.Popen([sys.executable, __file__, "run", job, *([str(only)] if only is not None else [])],
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     stdin=subprocess.DEVNULL)


def run(job, only=None):
    entry = load()["jobs"][job]
    d = entry["directives"]
    nodes, per_node = int(d.get("nodes", 1)), int(d.get("ntasks-per-node", 1))
    for task in entry["tasks"]:
        if only is not None and task != only:
            continue
        env = {**os.environ, "SLURM_JOB_ID": str(int(job) + 1 + int(task)) if entry["array"] else job,
               "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_JOB_NODELIST": "localhost", "SLURM_NTASKS": str(nodes * per_node),
               "SLURM_NTASKS_PER_NODE": str(per_node), "SLURM_STUB_JOB": job, "SLURM_STUB_TASK": task}
        env.pop("STUB_SLURM_HOLD", None)
        if entry["array"]:
            env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=task)
        set_state(job, task, "RUNNING")
        code = subprocess.run(["bash", entry["script"]], env=env).returncode
        if load()["jobs"][job]["tasks"][task] == "RUNNING":  # not requeued meanwhile
            set_state(job, task, "COMPLETED" if code == 0 else "FAILED")


def srun(args):
    out, i = None, 0
    while args[i].startswith("--"):
        if args[i] in ("--output", "--error"):
            out = args[i + 1] if args[i] == "--output" else out
            i += 2
        else:
            i += 1
    command = args[i:]
    procs = []
    for rank in range(int(os.environ.get("SLURM_NTASKS", "1"))):
        path = (out or "/dev/null").replace("%A", os.environ.get("SLURM_ARRAY_JOB_ID", "")).replace(
            "%a", os.environ.get("SLURM_ARRAY_TASK_ID", "")).replace("%j", os.environ["SLURM_JOB_ID"]).replace(
            "%t", str(rank))
        env = {**os.environ, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0"}
        procs.append(subprocess.Popen(command, env=env, stdout=open(path, "a"), stderr=subprocess.STDOUT))
    return max(p.wait() for p in procs)


def sacct(args):
    with open(DIR / "sacct.calls", "a") as calls:  # the tests count the gathering's calls
        calls.write(" ".join(args) + "\n")
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    jobs = load()["jobs"]
    for job in ids:
        for task, state in jobs.get(job, {}).get("tasks", {}).items():
            name = f"{job}_{task}" if jobs[job]["array"] else job
            print(f"{name}|{state}|localhost")


def scancel(args):
    queue = load()
    for job in args:
        base, _, task = job.partition("_")
        for t in queue["jobs"].get(base, {}).get("tasks", {}):
            if not task or t == task:
                queue["jobs"][base]["tasks"][t] = "CANCELLED"
    save(queue)


def scontrol(args):
    if args[:1] == ["requeue"]:
        base, _, task = args[1].partition("_")
        set_state(base, task or "0", "REQUEUED")
        start(base, task or "0")


def release():
    for job, entry in load()["jobs"].items():
        if any(s == "PENDING" for s in entry["tasks"].values()):
            start(job)


if __name__ == "__main__":
    name, args = Path(sys.argv[0]).name, sys.argv[1:]
    if name == "slurm_stub.py":
        name, args = args[0], args[1:]
    if name == "run":
        run(args[0], args[1] if len(args) > 1 else None)
    elif name == "release":
        release()
    elif name == "squeue":
        print("JOBID PARTITION NAME USER ST TIME NODES NODELIST(REASON)")
    else:
        sys.exit({"sbatch": sbatch, "srun": srun, "sacct": sacct, "scancel": scancel, "scontrol": scontrol}[name](args)
                 or 0)
