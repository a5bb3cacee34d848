"""What a job costs on AWS: the prices (us-east-1, named constants with the date they were
taken) and an itemized estimate from counted usage.

One module for every estimate: `bench/scale.py` (the simulation), `excamera encode
--estimate-cost` and the job's status use these same constants, so a price changes in one place.
Prices are AWS's published on-demand rates for us-east-1, without free tiers or savings plans;
each constant names its unit. AWS changes them rarely; check https://aws.amazon.com/pricing/
when PRICES_DATE is old.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["PRICES_DATE", "Usage", "estimate", "lambda_gb_seconds"]

PRICES_DATE = "2026-12-01"  # the day these were read and written down (us-east-1)

# AWS Lambda (first pricing tier, up to 6 billion GB-s a month). Since 2025-08-01 the init
# phase (a cold start) of managed runtimes is billed as duration too.
LAMBDA_X86_USD_PER_GB_S = 0.0000166667
LAMBDA_ARM_USD_PER_GB_S = 0.0000133334
LAMBDA_USD_PER_REQUEST = 0.20 / 1_000_000

# Amazon S3 Standard.
S3_PUT_USD_PER_REQUEST = 0.005 / 1000  # PUT, COPY, POST, LIST
S3_GET_USD_PER_REQUEST = 0.0004 / 1000  # GET, SELECT, and all other requests
S3_USD_PER_GB_MONTH = 0.023

# Amazon SQS, per request (64 KB chunks; every send, receive and delete is one).
SQS_STANDARD_USD_PER_REQUEST = 0.40 / 1_000_000
SQS_FIFO_USD_PER_REQUEST = 0.50 / 1_000_000

# AWS Fargate, Linux x86.
FARGATE_USD_PER_VCPU_HOUR = 0.04048
FARGATE_USD_PER_GB_HOUR = 0.004445

HOURS_PER_MONTH = 730.0


def lambda_gb_seconds(memory_mb: float, seconds: float) -> float:
    """Billed GB-seconds of `seconds` of duration (init included) at `memory_mb`."""
    return memory_mb / 1024.0 * seconds


@dataclass
class Usage:
    """What one job used, counted; every field is a plain total for the job."""

    lambda_gb_s_x86: float = 0.0
    lambda_gb_s_arm: float = 0.0
    lambda_requests: int = 0
    s3_puts: int = 0
    s3_gets: int = 0
    s3_gb_hours: float = 0.0  # intermediates kept until the job's retention ends
    sqs_requests: int = 0
    sqs_fifo_requests: int = 0
    fargate_vcpu_hours: float = 0.0
    fargate_gb_hours: float = 0.0

    def add(self, other: Usage) -> Usage:
        return Usage(**{key: value + getattr(other, key) for key, value in asdict(self).items()})


def estimate(usage: Usage) -> dict[str, float]:
    """Itemized cost in US dollars (and "total"), from the constants above."""
    items = {
        "lambda_compute": usage.lambda_gb_s_x86 * LAMBDA_X86_USD_PER_GB_S
        + usage.lambda_gb_s_arm * LAMBDA_ARM_USD_PER_GB_S,
        "lambda_requests": usage.lambda_requests * LAMBDA_USD_PER_REQUEST,
        "s3_requests": usage.s3_puts * S3_PUT_USD_PER_REQUEST
        + usage.s3_gets * S3_GET_USD_PER_REQUEST,
        "s3_storage": usage.s3_gb_hours / HOURS_PER_MONTH * S3_USD_PER_GB_MONTH,
        "sqs_requests": usage.sqs_requests * SQS_STANDARD_USD_PER_REQUEST
        + usage.sqs_fifo_requests * SQS_FIFO_USD_PER_REQUEST,
        "fargate": usage.fargate_vcpu_hours * FARGATE_USD_PER_VCPU_HOUR
        + usage.fargate_gb_hours * FARGATE_USD_PER_GB_HOUR,
    }
    items["total"] = sum(items.values())
    return items
