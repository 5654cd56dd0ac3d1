"""Simulate the full ADSH-paper grid on a Ray cluster of K nodes: makespan and scheduling overhead.

The grid is planned as ``hashbench run`` would plan it on the three paper datasets
(``adsh2018-cifar10``, ``adsh2018-nuswide``, ``adsh2018-coco``): every single-modal method of
the paper, bits 12/24/32/48, seeds 0-4, each method in its protocol's training mode plus the
"-D" runs of the protocol's ``train.variants`` (the paper's Table 2 and Fig. 3 rows: 1,120
trials; ``--every-mode``: every method in both modes, 1,360). Single-label methods (KADGH) are
left out on the multi-label sets, as ``--methods all`` does. Each trial is replaced by a sleep
of its duration: measured durations from ``--durations FILE.json`` (``{"method[-D]/dataset":
seconds}``) where given, else the estimates in :data:`ESTIMATES` (orders of magnitude at the
paper's sizes: one GPU for the deep methods, one CPU for the shallow ones), all divided by
``--speedup`` (default 100,000: a simulated day takes under a second).

For K = 1, 2, 4, 8 the script starts a local Ray cluster of K simulated nodes with ``ray
start --block`` (a head and K - 1 workers on this machine, each started once the one before
has registered, stopped by their process ids; each with ``--num-cpus 0`` and the custom
resources ``sim_cpu`` (CPU slots, ``--cpu-slots``) and ``sim_gpu`` (GPU slots,
``--gpu-slots``); no dashboard, no log monitor, a 100 MB object store), submits one task per
trial the way :class:`hashbench.executors.RayExecutor` does (all at once, CPU trials asking
for a CPU slot, GPU trials for a GPU slot) and waits for every outcome. It prints, per K:
the measured makespan (scaled back to simulated hours), the ideal makespan of the same list
schedule without any overhead (computed here, greedy on the first free slot in submission
order), the scheduling overhead per trial: (measured - ideal) x slots / trials, in real
milliseconds, the time the cluster took to start, its processes and their resident memory
(with psutil), and the load average at the end.

Sleeping tasks need no CPU, so many slots fit on a small machine; each node still runs a
raylet, a dashboard agent and a runtime-env agent (the head also the GCS and the
autoscaler's monitor), and each slot one Ray worker process: on a shared 2-CPU machine
their background work is what the overhead column measures as K grows.

    nice -n 10 .venv/bin/python benchmarks/grid_scaling.py                    # K = 1, 2, 4, 8
    .venv/bin/python benchmarks/grid_scaling.py --nodes 1,2 --speedup 400000  # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROTOCOLS = ("adsh2018-cifar10", "adsh2018-nuswide", "adsh2018-coco")
METHODS = ("adsh", "dpsh", "dsh", "dhn", "lfh", "fasth", "sdh", "cosdish", "kadgh", "linlin", "linv",
           "itq", "lsh")
BITS = (12, 24, 32, 48)
SEEDS = (0, 1, 2, 3, 4)
DEEP = {"adsh", "dpsh", "dsh", "dhn"}

# Estimated seconds of one trial at CIFAR-10 size (59,000 database items; the sampled
# training set 5,000): deep methods on one GPU, shallow methods on one CPU core. Rough orders
# of magnitude, to be replaced by measured values through --durations.
ESTIMATES = {
    ("adsh", "sampled"): 2400, ("adsh", "full"): 2400,  # ADSH always learns the whole database
    ("dpsh", "sampled"): 1500, ("dpsh", "full"): 12000,
    ("dsh", "sampled"): 1200, ("dsh", "full"): 10000,
    ("dhn", "sampled"): 1500, ("dhn", "full"): 12000,
    ("lfh", "sampled"): 300, ("lfh", "full"): 2400,
    ("fasth", "sampled"): 1200, ("fasth", "full"): 6000,
    ("sdh", "sampled"): 120, ("sdh", "full"): 900,
    ("cosdish", "sampled"): 400, ("cosdish", "full"): 3000,
    ("kadgh", "sampled"): 600, ("kadgh", "full"): 4000,
    ("linlin", "sampled"): 300, ("linlin", "full"): 1500,
    ("linv", "sampled"): 1500, ("linv", "full"): 1500,
    ("itq", "sampled"): 15, ("itq", "full"): 40,
    ("lsh", "sampled"): 5, ("lsh", "full"): 10,
}
SIZE = {"cifar10": 1.0, "nuswide": 3.3, "coco": 2.0}  # database size relative to CIFAR-10's
MULTILABEL = {"nuswide", "coco"}


@dataclass(frozen=True)
class SimTrial:
    method: str
    mode: str
    dataset: str
    bits: int
    seed: int
    seconds: float  # simulated
    gpu: bool


def plan(measured: dict[str, float], every_mode: bool = False) -> list[SimTrial]:
    """The paper grid, in the order ``hashbench run`` submits it (method, mode, bits, seed);
    ``every_mode``: every method also on the whole database, not only the paper's "-D" rows."""
    from hashbench.protocol import get_protocol

    trials = []
    for name in PROTOCOLS:
        protocol = get_protocol(name)
        dataset = protocol.dataset
        for method in METHODS:
            if dataset in MULTILABEL and method == "kadgh":
                continue  # single-label only: left out under --methods all
            own = protocol.mode_for(method)
            variant = (every_mode or method in protocol.variants) and own != "full"
            modes = [own, "full"] if variant else [own]
            for mode in modes:
                label = f"{method}{'-D' if mode == 'full' else ''}/{dataset}"
                seconds = measured.get(label, ESTIMATES[(method, mode)] * SIZE[dataset])
                for bits in BITS:
                    for seed in SEEDS:
                        trials.append(SimTrial(method, mode, dataset, bits, seed,
                                               seconds * (0.8 + 0.4 * bits / 48), method in DEEP))
    return trials


def ideal_makespan(durations: list[float], gpu: list[bool], cpu_slots: int, gpu_slots: int) -> float:
    """Greedy list schedule in submission order on the first free slot of the right kind."""
    free = {False: [0.0] * cpu_slots, True: [0.0] * gpu_slots}
    for heap in free.values():
        heapq.heapify(heap)
    end = 0.0
    for seconds, on_gpu in zip(durations, gpu, strict=True):
        start = heapq.heappop(free[on_gpu])
        heapq.heappush(free[on_gpu], start + seconds)
        end = max(end, start + seconds)
    return end


def ray_cli() -> str:
    return shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


def start_cluster(nodes: int, cpu_slots: int, gpu_slots: int, port: int,
                  logs: Path) -> tuple[str, list[subprocess.Popen]]:
    """A head and ``nodes - 1`` workers on this machine, each one simulated node: ``ray start
    --block`` processes in sessions of their own (output in ``logs``), stopped by
    :func:`stop_cluster` (only them). Connects this process to the head.

    The workers start one at a time, each once the one before has registered: nodes started
    together on one machine race for the same object store socket name in the session's
    ``sockets`` folder (each takes the first free ``plasma_store.N``) and all but one raylet abort
    with "bind: Address already in use" (what stopped K = 4 before). Every node is made light:
    no log monitor (the driver does not print worker logs), no dashboard, a 100 MB object store
    (the tasks return one float each), and the worker pool sized to its slots."""
    import ray

    resources = json.dumps({"sim_cpu": cpu_slots, "sim_gpu": gpu_slots})
    common = ["--num-cpus", "0", "--num-gpus", "0", "--resources", resources, "--disable-usage-stats",
              "--include-log-monitor", "false", "--object-store-memory", str(100 * 1024**2), "--block"]
    # with --num-cpus 0 the raylet would start one worker process at a time and keep at most one
    # idle: size both to the node's slots, as a node with that many CPUs gets
    env = {**os.environ, "RAY_num_workers_soft_limit": str(cpu_slots + gpu_slots)}
    address = f"127.0.0.1:{port}"
    procs = []

    def start(*options: str) -> subprocess.Popen:
        log = logs / f"node{len(procs)}.log"
        with log.open("wb") as out:
            procs.append(subprocess.Popen([ray_cli(), "start", *options, *common], stdout=out,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True))
        return procs[-1]

    try:
        head = start("--head", "--port", str(port), "--include-dashboard", "false")
        wait_for_port(port, head)  # the head's GCS must answer before anyone joins
        ray.init(address=address, log_to_driver=False)
        for joined in range(1, nodes + 1):
            node = head if joined == 1 else start("--address", address)
            wait_until(lambda n=joined: sum(n_["Alive"] for n_ in ray.nodes()) >= n, node,
                       f"node {joined} of {nodes} did not join", logs / f"node{joined - 1}.log")
        wait_until(lambda: ray.cluster_resources().get("sim_cpu", 0) >= nodes * cpu_slots, head,
                   "the simulated nodes' resources did not all appear", logs / "node0.log")
    except BaseException:
        ray.shutdown()
        stop_cluster(procs, port)
        raise
    return address, procs


def wait_until(ready, proc: subprocess.Popen, what: str, log: Path, timeout: float = 120) -> None:
    """Until ``ready()``; fails with the end of ``log`` when ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {proc.returncode}" if proc.poll() is not None else f"{timeout:.0f} s passed"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{what} ({why}); the end of {log}: " + " | ".join(tail))
        time.sleep(0.2)


def wait_for_port(port: int, head: subprocess.Popen, timeout: float = 180) -> None:
    """Until the head's GCS accepts connections on ``port`` (tens of seconds on a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        if head.poll() is not None:
            raise RuntimeError(f"ray start --head exited with {head.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not listen on port {port} in {timeout:.0f} s") from None
            time.sleep(0.5)


def stop_cluster(procs: list[subprocess.Popen], port: int) -> None:
    for proc in reversed(procs):  # workers first, then the head
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    # `ray start --head` left its address for later ray.init() calls without one on this machine
    # (they would try to join this stopped cluster): forget it, as `ray stop` would
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    with contextlib.suppress(OSError):
        if current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def cluster_size(procs: list[subprocess.Popen]) -> tuple[int, int]:
    """Processes and summed resident memory (bytes) of the nodes: each ``ray start`` and all
    it started (GCS, raylet, agents, workers); (0, 0) without psutil."""
    try:
        import psutil
    except ImportError:
        return 0, 0
    count = rss = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            top = psutil.Process(proc.pid)
            for process in [top, *top.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss += process.memory_info().rss
                    count += 1
    return count, rss


def simulate(trials: list[SimTrial], nodes: int, args: argparse.Namespace) -> dict[str, float]:
    import ray

    logs = Path(tempfile.mkdtemp(prefix=f"grid_scaling_k{nodes}_"))
    started = time.monotonic()
    address, procs = start_cluster(nodes, args.cpu_slots, args.gpu_slots, args.port, logs)
    startup = time.monotonic() - started
    try:
        @ray.remote(num_cpus=0, max_retries=0)
        def trial(seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        cpu_task = trial.options(resources={"sim_cpu": 1})
        gpu_task = trial.options(resources={"sim_gpu": 1})
        # warm the worker pool so the first wave does not pay for process start-up: tasks long
        # enough that every slot of every node holds one at the same time (one worker each)
        ray.get([cpu_task.remote(2.0) for _ in range(nodes * args.cpu_slots)]
                + [gpu_task.remote(2.0) for _ in range(nodes * args.gpu_slots)])
        processes, rss = cluster_size(procs)  # every node's raylet, agents and warm workers
        durations = [t.seconds / args.speedup for t in trials]
        started = time.monotonic()
        refs = [(gpu_task if t.gpu else cpu_task).remote(d) for t, d in zip(trials, durations, strict=True)]
        submitted = time.monotonic() - started
        pending = refs
        while pending:  # collect as RayExecutor does: as they finish
            _, pending = ray.wait(pending, num_returns=1, timeout=0.5)
        makespan = time.monotonic() - started
    finally:
        ray.shutdown()
        stop_cluster(procs, args.port)
        shutil.rmtree(logs, ignore_errors=True)
    ideal = ideal_makespan(durations, [t.gpu for t in trials], nodes * args.cpu_slots, nodes * args.gpu_slots)
    slots = nodes * (args.cpu_slots + args.gpu_slots)
    hours = args.speedup / 3600
    return {"nodes": nodes, "makespan_h": makespan * hours, "ideal_h": ideal * hours, "real_s": makespan,
            "startup_s": startup, "processes": processes, "rss_mib": rss / 2**20,
            "submit_ms_per_trial": 1000 * submitted / len(trials),
            "overhead_ms_per_trial": 1000 * max(0.0, makespan - ideal) * slots / len(trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,2,4,8", help="cluster sizes K (default: 1,2,4,8)")
    parser.add_argument("--cpu-slots", type=int, default=2, help="CPU trial slots per node (default: 2)")
    parser.add_argument("--gpu-slots", type=int, default=1, help="GPU trial slots per node (default: 1)")
    parser.add_argument("--speedup", type=float, default=100000.0,
                        help="simulated seconds per real second (default: 100000)")
    parser.add_argument("--durations", type=Path, help="measured seconds per 'method[-D]/dataset' (JSON)")
    parser.add_argument("--port", type=int, default=6390, help="the simulated head's GCS port")
    parser.add_argument("--every-mode", action="store_true",
                        help="every method in both modes (sampled and the whole database), not only "
                             "the paper's '-D' rows (train.variants)")
    args = parser.parse_args()
    measured = json.loads(args.durations.read_text()) if args.durations else {}
    # token authentication (on by default for clusters started with `ray start`): one token made
    # for this run, for every node and the driver, as a real cluster shares one. Set before Ray
    # is imported: it reads RAY_AUTH_MODE then.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    trials = plan(measured, args.every_mode)
    n_gpu = sum(t.gpu for t in trials)
    serial_h = sum(t.seconds for t in trials) / 3600
    print(f"ADSH-paper grid: {len(trials)} trials ({n_gpu} GPU, {len(trials) - n_gpu} CPU) on "
          f"{', '.join(PROTOCOLS)}; {serial_h:,.0f} h of trials one after the other "
          f"({'measured + ' if measured else ''}estimated durations); node = {args.cpu_slots} CPU + "
          f"{args.gpu_slots} GPU slots; time x{args.speedup:g}; {os.cpu_count()} real CPUs", flush=True)
    print(f"{'K':>2}  {'makespan':>10}  {'ideal':>10}  {'speed-up':>8}  {'real s':>7}  "
          f"{'submit ms/trial':>15}  {'overhead ms/trial':>17}  {'cluster start s':>15}  {'processes':>9}  "
          f"{'RSS MiB':>7}  load", flush=True)
    first = None
    for nodes in (int(k) for k in args.nodes.split(",")):
        row = simulate(trials, nodes, args)
        first = first or row["makespan_h"]
        print(f"{nodes:>2}  {row['makespan_h']:>9,.1f}h  {row['ideal_h']:>9,.1f}h  "
              f"{first / row['makespan_h']:>7.2f}x  "
              f"{row['real_s']:>7.1f}  {row['submit_ms_per_trial']:>15.2f}  "
              f"{row['overhead_ms_per_trial']:>17.1f}  {row['startup_s']:>15.1f}  {row['processes']:>9}  "
              f"{row['rss_mib']:>7.0f}  "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    main()
