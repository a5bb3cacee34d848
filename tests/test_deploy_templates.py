"""deploy/*.yaml: cfn-lint passes (offline: it carries CloudFormation's resource schemas), and the
template declares what the services and the Lambda handlers expect of AWS (the interface in
deploy/README.md): queue names, FIFO ordering, dead-letter queues, visibility timeouts, the
handlers, the runtime the artifact is built for, and IAM scoped to the bucket's prefixes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

cfnlint_decode = pytest.importorskip("cfnlint.decode", reason="cfn-lint is in the test extra")

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((REPO / "deploy").glob("*.yaml"))
TEMPLATE = REPO / "deploy" / "excamera.yaml"
# The runtime deploy/package.sh builds for (its PYTHON_VERSION); the template must name it.
LAMBDA_RUNTIME = "python3.13"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, problems = cfnlint_decode.decode(str(TEMPLATE))
    assert not problems, problems
    return decoded


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: body["Properties"] for name, body in template["Resources"].items()
            if body["Type"] == kind}


def queue_name(properties: dict[str, Any]) -> str:
    """The queue's name with the prefix parameter written as P (from `!Sub ${QueuePrefix}-x`)."""
    return properties["QueueName"]["Fn::Sub"].replace("${QueuePrefix}", "P")


def test_cfn_lint_passes() -> None:
    assert TEMPLATES, "no templates in deploy/"
    # The command itself, as CI and operators run it: `cfn-lint deploy/*.yaml`.
    command = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(command), *map(str, TEMPLATES)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_queues_are_the_ones_the_services_use(template: dict[str, Any]) -> None:
    queues = {queue_name(p): p for p in resources(template, "AWS::SQS::Queue").values()}
    for name in ("P-ingest", "P-ingest-dead", "P-events", "P-split", "P-encode", "P-decode",
                 "P-rebase.fifo", "P-join", "P-dead"):
        assert name in queues, name
    rebase = queues["P-rebase.fifo"]
    assert rebase["FifoQueue"] is True
    # The rebaser sets MessageDeduplicationId itself; content-based dedup would merge retries.
    assert rebase["ContentBasedDeduplication"] is False
    assert rebase["FifoThroughputLimit"] == "perMessageGroupId"


def test_work_queues_dead_letter_after_a_few_receives(template: dict[str, Any]) -> None:
    by_logical = resources(template, "AWS::SQS::Queue")
    for logical, properties in by_logical.items():
        name = queue_name(properties)
        if name.split("-", 1)[1] in ("ingest", "split", "encode", "decode", "join", "rebase.fifo"):
            redrive = properties["RedrivePolicy"]
            assert 3 <= redrive["maxReceiveCount"] <= 10, name
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            assert by_logical[target].get("FifoQueue", False) == name.endswith(".fifo"), logical


def test_lambda_queues_outlast_six_function_timeouts(template: dict[str, Any]) -> None:
    functions = resources(template, "AWS::Lambda::Function")
    queues = resources(template, "AWS::SQS::Queue")
    mappings = resources(template, "AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 2
    for mapping in mappings.values():
        function = functions[mapping["FunctionName"]["Ref"]]
        queue = queues[mapping["EventSourceArn"]["Fn::GetAtt"][0]]
        assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert "MaximumConcurrency" in mapping["ScalingConfig"]


def test_the_api_outlasts_the_load_balancers_idle_connections(template: dict[str, Any]) -> None:
    """A target that closes an idle connection the balancer is about to reuse makes a 502:
    the API's idle timeout must be the longer (AWS's advice for ALB targets)."""
    balancer, = resources(template, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    attributes = {a["Key"]: a["Value"] for a in balancer["LoadBalancerAttributes"]}
    balancer_idle = float(attributes.get("idle_timeout.timeout_seconds", 60))
    commands = [container["Command"] for task in resources(template, "AWS::ECS::TaskDefinition")
                .values() for container in task["ContainerDefinitions"]
                if container["Command"][:2] == ["service", "api"]]
    assert len(commands) == 1
    from services.config import API_IDLE_SECONDS

    command = commands[0]
    api_idle = (float(command[command.index("--idle-timeout") + 1])
                if "--idle-timeout" in command else API_IDLE_SECONDS)
    assert api_idle > balancer_idle, (api_idle, balancer_idle)


def test_handlers_and_runtime(template: dict[str, Any]) -> None:
    functions = resources(template, "AWS::Lambda::Function")
    handlers = sorted(f["Handler"] for f in functions.values())
    assert handlers == ["services.decoder.lambda_handler.handler",
                        "services.encoder.lambda_handler.handler"]
    for function in functions.values():
        assert function["Runtime"] == LAMBDA_RUNTIME
        assert function["Architectures"] == ["x86_64"]
        assert function["Timeout"] <= 900
        assert set(function["VpcConfig"]) == {"SubnetIds", "SecurityGroupIds"}
        env = function["Environment"]["Variables"]
        assert env["EXCAMERA_BROKER"] == "sqs://"
        for name in ("EXCAMERA_STORE", "EXCAMERA_DB", "EXCAMERA_QUEUE_PREFIX"):
            assert name in env
    package = (REPO / "deploy" / "package.sh").read_text()
    assert f'PYTHON_VERSION="${{PYTHON_VERSION:-{LAMBDA_RUNTIME[6:]}}}"' in package


def test_iam_is_scoped_to_the_stack(template: dict[str, Any]) -> None:
    """No role may act on every bucket or queue: S3 object actions name a prefix of the job
    bucket, and SQS actions name this stack's queues."""
    for name, role in resources(template, "AWS::IAM::Role").items():
        for policy in role.get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                actions = [actions] if isinstance(actions, str) else actions
                assert "*" not in statement["Resource"], name
                for action in actions:
                    assert not action.endswith(":*"), (name, action)
                if any(a.startswith("s3:") and a != "s3:ListBucket" for a in actions):
                    for resource in _as_list(statement["Resource"]):
                        text = resource["Fn::Sub"]
                        assert text.split("/", 1)[1] in ("jobs/*", "uploads/*", "outputs/*"), name


def test_whoever_may_end_a_job_may_announce_it(template: dict[str, Any]) -> None:
    """A role that may fail a task (publish to the dead-letter queue) may end its job, and so
    must be allowed to post the end to the events queue (services/events.py)."""
    senders = {}
    for name, role in resources(template, "AWS::IAM::Role").items():
        queues = set()
        for policy in role.get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if "sqs:SendMessage" in _as_list(statement["Action"]):
                    queues |= {r["Fn::GetAtt"][0] for r in _as_list(statement["Resource"])
                               if isinstance(r, dict) and "Fn::GetAtt" in r}
        senders[name] = queues
    enders = [name for name, queues in senders.items() if "DeadQueue" in queues]
    assert {"EncoderRole", "DecoderRole", "ApiTaskRole", "SplitterTaskRole",
            "RebaserTaskRole"} <= set(enders), enders
    for name in enders:
        assert "EventsQueue" in senders[name], name


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_intermediates_expire(template: dict[str, Any]) -> None:
    (bucket,) = resources(template, "AWS::S3::Bucket").values()
    rules = {rule["Prefix"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]
             if "Prefix" in rule}
    assert rules["jobs/"]["Status"] == "Enabled"
    assert rules["jobs/"]["ExpirationInDays"] == {"Ref": "IntermediateRetentionDays"}
    assert rules["uploads/"]["Status"] == "Enabled"
    assert "outputs/" in rules


def test_the_created_token_secret_is_one_the_api_accepts(template: dict[str, Any]) -> None:
    """The secret the stack makes when given none is what the API task reads as
    EXCAMERA_API_TOKENS. Secrets Manager's GenerateSecretString, with a template and a key,
    stores the template's JSON object with the key set to a random string; without them, a
    bare random string, which the API refused at start-up ('... is not name:token')."""
    import json
    import string

    from services.api.auth import Tokens

    generate = template["Resources"]["ApiTokenSecret"]["Properties"]["GenerateSecretString"]
    assert "SecretStringTemplate" in generate and "GenerateStringKey" in generate, generate
    assert generate.get("ExcludePunctuation") and generate["PasswordLength"] >= 32
    value = json.loads(generate["SecretStringTemplate"])
    value[generate["GenerateStringKey"]] = "".join(
        (string.ascii_letters + string.digits)[i % 62] for i in range(generate["PasswordLength"]))
    tokens = Tokens.parse(json.dumps(value))
    assert tokens.names() == [generate["GenerateStringKey"]] == ["operator"]
    (secret,) = [s for s in resources(template, "AWS::ECS::TaskDefinition")["ApiTask"]
                 ["ContainerDefinitions"][0]["Secrets"] if s["Name"] == "EXCAMERA_API_TOKENS"]
    assert secret["ValueFrom"]["Fn::If"][1] == {"Ref": "ApiTokenSecret"}  # the whole secret
