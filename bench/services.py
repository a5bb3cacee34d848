#!/usr/bin/env python3
"""The services against the embedded runner, on this machine (a benchmark, not a test).

    python bench/services.py [--clip PATH] [-n 6] [-x 16] [--scale-chunks 3552] [--json]

1. The same job (Big Buck Bunny 720p from samples/, ExCamera[6,16], cq 20) run embedded
   (`excamera encode`'s runner, 2 workers) and through the services (splitter, 2 encoder
   processes, decoder, rebaser; real RabbitMQ, PostgreSQL and a file store), from posting the
   ingest message to the job's record saying done. The outputs must be the same bytes.
   Orchestration overhead = services' wall time / embedded wall time - 1 (goal: under 5 %).
2. Queue latency: task messages published one at a time to idle workers, from the publish
   stamp to the worker picking it up (goal on loopback RabbitMQ: p50 < 5 ms, p99 < 50 ms),
   and each task's wait in the job of 1 (from being made ready to starting: this includes
   waiting for a free worker).
3. One encoder process against two: the span of the parallel stages (phase 1 and stage 4)
   in the same job (goal: about 1.8x faster with two on 2 cores).
4. Control-plane scale: a job of --scale-chunks chunks (3,552: the original's Sintel 4K job)
   of tiny pictures: tasks per second, the job status query's latency during the job (p50,
   p99; goal p99 < 100 ms), and the broker's and the store's requests per chunk, next to a job
   of a quarter as many chunks (per-chunk costs must not grow with the chunk count).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from services_support import Cluster, cluster_at  # noqa: E402

from shared.codec.image import Image  # noqa: E402
from shared.codec.y4m import Y4mWriter  # noqa: E402


def embedded(source: Path, output: Path, n: int, x: int) -> float:
    from shared.pipeline.runner import run_job

    began = time.perf_counter()
    run_job(source, output, n=n, x=x, quality=20, workers=2, progress=False)
    return time.perf_counter() - began


def through_services(cluster: Cluster, source: Path, n: int, x: int, name: str,
                     during: Any = None) -> tuple[float, str, Path]:
    output = cluster.outputs / f"{name}.ivf"
    began = time.perf_counter()
    job = cluster.submit(name, source, output, frames_per_chunk=n, chunks_per_group=x)
    deadline = time.monotonic() + 30
    while not cluster.job_exists(job):
        letters = cluster.queue_messages("ingest.dead")
        if letters or time.monotonic() > deadline:
            raise SystemExit(f"the job {name} was not accepted: {letters}")
        time.sleep(0.05)
    record = cluster.wait(job, timeout=3600, during=during)
    seconds = time.perf_counter() - began
    if record.state != "done":
        raise SystemExit(f"the job {name} ended {record.state}: {record.error}")
    return seconds, job, output


def parallel_span(cluster: Cluster, job: str) -> float:
    """First start to last end of phase 1 and stage 4 together."""
    with cluster.records() as records:
        progress = records.progress(job)
    starts = [progress[s]["first_start"] for s in ("encode", "first")]
    ends = [progress[s]["last_end"] for s in ("encode", "first")]
    from datetime import datetime

    return (max(map(datetime.fromisoformat, ends))
            - min(map(datetime.fromisoformat, starts))).total_seconds()


def queue_waits(cluster: Cluster, job: str) -> list[float]:
    from datetime import datetime

    with cluster.records() as records:
        tasks = records.tasks(job, limit=1_000_000)
    return [
        (datetime.fromisoformat(t["started_at"]) - datetime.fromisoformat(t["queued_at"]))
        .total_seconds()
        for t in tasks if t["queued_at"] and t["started_at"] and t["stage"] != "split"
    ]


def scrape(cluster: Cluster, service: str) -> dict[str, dict[tuple, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(
        f"http://127.0.0.1:{cluster.metrics_ports[service]}/metrics", timeout=10).read()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                sample.value)
    return samples


def histogram_quantile(buckets: dict[float, float], q: float) -> float:
    """Prometheus' estimate: linear within the bucket holding the quantile."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            share = (rank - below) / max(buckets[bound] - below, 1e-12)
            return lower + (bound - lower) * share
        lower, below = bound, buckets[bound]
    return lower


def transit_latency(cluster: Cluster, job: str, count: int = 400) -> dict[str, float]:
    """Publish `count` task messages of a finished job, spaced so the worker is idle for each
    (it skips them: the job is done), and read the worker's queue-latency histogram."""
    from services.config import ServiceConfig
    from services.runtime import Runtime
    from shared.pipeline.messages import TaskMessage

    def histogram() -> dict[float, float]:
        counts = scrape(cluster, "encoder")["excamera_queue_latency_seconds_bucket"]
        return {float(dict(k)["le"]): v for k, v in counts.items()
                if dict(k)["service"] == "encoder"}

    before = histogram()
    config = ServiceConfig.from_env({k: v for k, v in cluster.env().items()
                                     if k.startswith("EXCAMERA_")})
    runtime = Runtime(config)
    for index in range(count):
        runtime.dispatcher.publish_task(TaskMessage(job, "encode", index % 10),
                                        ordering_key=job, position=0)
        time.sleep(0.02)
    time.sleep(1.0)
    after = histogram()
    runtime.close()
    delta = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    return {"messages": delta[float("inf")], "p50_ms": 1000 * histogram_quantile(delta, 0.5),
            "p99_ms": 1000 * histogram_quantile(delta, 0.99)}


def tiny_clip(path: Path, frames: int) -> Path:
    """`frames` 16x16 pictures of moving noise-free gradients (cheap to encode)."""
    import numpy as np

    with open(path, "wb") as file:
        writer = Y4mWriter(file, 16, 16, (24, 1))
        ramp = np.arange(16, dtype=np.int32)
        for k in range(frames):
            y = ((ramp[None, :] * 8 + ramp[:, None] * 4 + k * 3) % 256).astype(np.uint8)
            u = np.full((8, 8), (128 + k) % 256, np.uint8)
            v = np.full((8, 8), (128 - k) % 256, np.uint8)
            writer.write(Image(y, u, v))
        writer.close()
    return path


def store_requests(cluster: Cluster) -> float:
    return sum(sum(scrape(cluster, service).get("excamera_store_requests_total", {}).values())
               for service in ("splitter", "encoder", "decoder", "rebaser"))


def broker_messages(cluster: Cluster) -> float:
    """Messages published by the services so far: one per task (and its ingest and split)."""
    return sum(sum(scrape(cluster, service).get("excamera_tasks_total", {}).values())
               for service in ("splitter", "encoder", "decoder", "rebaser"))


def scale_run(cluster: Cluster, chunks: int, name: str) -> dict[str, Any]:
    (cluster.root / "inputs").mkdir(exist_ok=True)
    source = tiny_clip(cluster.root / "inputs" / f"{name}.y4m", chunks * 6)
    latencies: list[float] = []
    store_before, messages_before = store_requests(cluster), broker_messages(cluster)
    last = [0.0]

    def poll_status(records: Any) -> None:
        if time.monotonic() - last[0] < 0.1:
            return
        last[0] = time.monotonic()
        began = time.perf_counter()
        job_record = records.get_job(job_id[0])
        if job_record is not None:
            records.progress(job_id[0])
            records.errors(job_id[0])
            records.overdue(job_id[0])
        latencies.append(time.perf_counter() - began)

    from shared.pipeline.messages import job_id_for

    job_id = [job_id_for(None, name)]
    seconds, job, _ = through_services(cluster, source, 6, 16, name, during=poll_status)
    with cluster.records() as records:
        tasks = sum(p["total"] for p in records.progress(job).values())
    time.sleep(0.5)
    note(f"scale, {chunks} chunks: {seconds:.1f} s")
    return {
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "tasks": tasks,
        "tasks_per_second": round(tasks / seconds, 1),
        "status_p50_ms": round(1000 * statistics.median(latencies), 2),
        "status_p99_ms": round(1000 * sorted(latencies)[int(0.99 * (len(latencies) - 1))], 2),
        "status_samples": len(latencies),
        "store_requests_per_chunk": round((store_requests(cluster) - store_before) / chunks, 2),
        "task_messages_per_chunk": round((broker_messages(cluster) - messages_before) / chunks,
                                         2),
    }


def moto_row(root: Path, clip: Path, reference: Path, n: int, x: int) -> float:
    """The same job on moto's S3 and SQS: splitter and rebaser as services, the encoder (two
    execution environments) and the decoder as Lambda handlers fed by SQS events."""
    import secrets

    import boto3
    from aws_support import moto_server

    with moto_server():
        bucket = f"b{secrets.token_hex(4)}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        settings = {"allow_output": (f"s3://{bucket}/out/",)}
        with cluster_at(root / "moto", clip.parent, broker="sqs://",
                        store=f"s3://{bucket}/store", settings=settings) as cluster:
            cluster.start({"encoder": 0, "decoder": 0})
            for function in ("encoder", "encoder", "decoder"):
                cluster.poller(function)
            began = time.perf_counter()
            cluster.post({"version": 1, "id": "moto", "input": clip.as_uri(),
                          "output": f"s3://{bucket}/out/moto.ivf", "frames_per_chunk": n,
                          "chunks_per_group": x, "cq_level": 20, "format": "ivf"})
            from shared.pipeline.messages import job_id_for

            record = cluster.wait(job_id_for(None, "moto"), timeout=3600)
            seconds = time.perf_counter() - began
            if record.state != "done":
                raise SystemExit(f"the moto job ended {record.state}: {record.error}")
            data = boto3.client("s3").get_object(Bucket=bucket, Key="out/moto.ivf")["Body"]
            if data.read() != reference.read_bytes():
                raise SystemExit("the moto run's output differs from the embedded encode")
    return seconds


def note(text: str) -> None:
    print(f"bench/services.py: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=REPO / "samples" / "bigbuckbunny-720p.mp4")
    parser.add_argument("-n", type=int, default=6)
    parser.add_argument("-x", type=int, default=16)
    parser.add_argument("--scale-chunks", type=int, default=3552)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-moto", action="store_true",
                        help="leave out the run on moto (S3 and SQS, Lambda handlers)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"clip": str(args.clip), "n": args.n, "x": args.x}
    with tempfile.TemporaryDirectory(prefix="excamera-bench-") as directory:
        root = Path(directory)
        reference = root / "embedded.ivf"
        results["embedded_s"] = round(embedded(args.clip, reference, args.n, args.x), 2)
        note(f"embedded: {results['embedded_s']} s")
        inputs = args.clip.parent
        for encoders in (2, 1):
            with cluster_at(root / f"c{encoders}", inputs) as cluster:
                cluster.start({"encoder": encoders})
                seconds, job, output = through_services(cluster, args.clip, args.n, args.x,
                                                        f"bench-{encoders}")
                if output.read_bytes() != reference.read_bytes():
                    raise SystemExit("the services' output differs from the embedded encode")
                results[f"services_{encoders}_encoders_s"] = round(seconds, 2)
                note(f"services, {encoders} encoder processes: {seconds:.2f} s")
                results[f"parallel_span_{encoders}_encoders_s"] = round(
                    parallel_span(cluster, job), 2)
                if encoders == 2:
                    waits = sorted(queue_waits(cluster, job))
                    results["queue_wait_p50_ms"] = round(1000 * statistics.median(waits), 1)
                    results["queue_wait_p99_ms"] = round(
                        1000 * waits[int(0.99 * (len(waits) - 1))], 1)
                    results["transit_latency"] = transit_latency(cluster, job)
                    if not args.skip_scale:
                        results["scale"] = [
                            scale_run(cluster, args.scale_chunks // 4, "scale-quarter"),
                            scale_run(cluster, args.scale_chunks, "scale-full"),
                        ]
        if not args.skip_moto:
            results["moto_s"] = round(moto_row(root, args.clip, reference, args.n, args.x), 2)
            note(f"moto (SQS + S3, Lambda handlers): {results['moto_s']} s")
    results["overhead_pct"] = round(
        100 * (results["services_2_encoders_s"] / results["embedded_s"] - 1), 1)
    results["encoder_speedup_1_to_2"] = round(
        results["parallel_span_1_encoders_s"] / results["parallel_span_2_encoders_s"], 2)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


def print_table(r: dict[str, Any]) -> None:
    transit = r["transit_latency"]
    print(f"ExCamera[{r['n']},{r['x']}] on {Path(r['clip']).name}")
    print(f"  embedded (2 workers)           {r['embedded_s']:8.2f} s")
    print(f"  services (2 encoder processes) {r['services_2_encoders_s']:8.2f} s   "
          f"overhead {r['overhead_pct']:+.1f} %  (goal < 5 %)")
    print(f"  services (1 encoder process)   {r['services_1_encoders_s']:8.2f} s")
    print(f"  parallel stages, 1 -> 2 encoders: {r['parallel_span_1_encoders_s']:.2f} -> "
          f"{r['parallel_span_2_encoders_s']:.2f} s = {r['encoder_speedup_1_to_2']:.2f}x "
          "(goal about 1.8x)")
    print(f"  queue transit to an idle worker: p50 {transit['p50_ms']:.2f} ms, p99 "
          f"{transit['p99_ms']:.2f} ms over {transit['messages']:.0f} messages "
          "(goal 5 / 50 ms)")
    print(f"  queue wait in the job (incl. waiting for a free worker): p50 "
          f"{r['queue_wait_p50_ms']:.1f} ms, p99 {r['queue_wait_p99_ms']:.1f} ms")
    if "moto_s" in r:
        print(f"  moto (SQS + S3; 2 encoder, 1 decoder Lambda environments) "
              f"{r['moto_s']:.2f} s   {100 * (r['moto_s'] / r['embedded_s'] - 1):+.1f} %")
    for row in r.get("scale", []):
        print(f"  control plane, {row['chunks']} chunks of 16x16: {row['seconds']:.1f} s, "
              f"{row['tasks']} tasks, {row['tasks_per_second']:.0f} tasks/s; status p50 "
              f"{row['status_p50_ms']:.1f} ms, p99 {row['status_p99_ms']:.1f} ms; per chunk: "
              f"{row['store_requests_per_chunk']:.1f} store requests, "
              f"{row['task_messages_per_chunk']:.1f} task messages")


if __name__ == "__main__":
    sys.exit(main())
