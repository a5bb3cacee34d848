"""A job's AWS cost as its records know it: what the tasks done so far cost, and the whole
job projected from them (shared/pipeline/job_cost.py does the pricing), for the job's status
and its budget cap."""

from __future__ import annotations

from typing import Any

from shared.pipeline import costs, job_cost

from .config import ServiceConfig
from .records import JobRecords

__all__ = ["job_estimate"]


def job_estimate(records: JobRecords, job: str, config: ServiceConfig) -> dict[str, Any]:
    """{"so_far": items, "projected": items, ...} in US dollars (items as in job_cost), with
    the functions' memory as configured (the deployment's)."""
    memory = {"lambda_memory_mb": config.encoder_memory_mb,
              "decoder_memory_mb": config.decoder_memory_mb}
    use = records.stage_use(job)
    done = {
        stage: job_cost.StageUse(int(row["done"]), float(row["seconds"]),
                                 {"get": int(row["reads"]), "put": int(row["writes"])})
        for stage, row in use.items()
    }
    totals = {stage: int(row["total"]) for stage, row in use.items()}
    return {
        "so_far": job_cost.job_estimate(done, **memory),
        "projected": job_cost.job_estimate(job_cost.project(done, totals), **memory),
        "lambda_memory_mb": config.encoder_memory_mb,
        "decoder_memory_mb": config.decoder_memory_mb,
        "prices_date": costs.PRICES_DATE,
        "region": "us-east-1",
    }
