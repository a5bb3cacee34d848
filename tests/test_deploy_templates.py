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


# --------------------------------------------------------------------------- what the code asks

ROLES = ("EncoderRole", "DecoderRole", "ApiTaskRole", "SplitterTaskRole", "RebaserTaskRole")


def _statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    properties = template["Resources"][role]["Properties"]
    return [statement for policy in properties.get("Policies", [])
            for statement in policy["PolicyDocument"]["Statement"]
            if statement["Effect"] == "Allow"]


def _queue_arns_allowed(template: dict[str, Any], role: str, action: str) -> list[str]:
    """The queue names (prefix written P) or name patterns `role` may do `action` on."""
    queues = resources(template, "AWS::SQS::Queue")
    allowed = []
    for statement in _statements(template, role):
        if action not in _as_list(statement["Action"]):
            continue
        for resource in _as_list(statement["Resource"]):
            if "Fn::GetAtt" in resource and resource["Fn::GetAtt"][0] in queues:
                allowed.append(queue_name(queues[resource["Fn::GetAtt"][0]]))
            elif "Fn::Sub" in resource and ":sqs:" in resource["Fn::Sub"]:
                allowed.append(resource["Fn::Sub"].rsplit(":", 1)[1].replace("${QueuePrefix}",
                                                                              "P"))
    return allowed


def test_every_role_may_look_up_every_queue(template: dict[str, Any]) -> None:
    """Every process on SQS resolves every queue's URL when it starts (kombu's predefined
    queues, services/broker.py): a role without GetQueueUrl on one made each of its
    publishes fail as 'broker unavailable'."""
    import fnmatch

    from services.broker import Topology
    from services.config import ServiceConfig
    from services.sqs import sqs_name

    topology = Topology.for_config(ServiceConfig(broker="sqs://", queue_prefix="P"))
    names = [sqs_name(name) for name in topology.all_queue_names()]
    assert "P-rebase.fifo" in names and "P-ingest-dead" in names
    for role in ROLES:
        patterns = _queue_arns_allowed(template, role, "sqs:GetQueueUrl")
        for name in names:
            assert any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns), (role, name)


def test_whoever_hedges_or_fans_out_encodes_may_send_them(template: dict[str, Any]) -> None:
    """A process with the encoder function named invokes encoder tasks directly and queues a
    delayed copy (services/broker.py, Dispatcher): the splitter's fan-out, and the rebaser's
    hedges of encoder stages (services/hedger.py), which it could not publish before."""
    from services.hedger import HEDGED_STAGES
    from shared.pipeline.graph import STAGES

    assert any(STAGES[stage].service == "encoder" for stage in HEDGED_STAGES)
    tasks = resources(template, "AWS::ECS::TaskDefinition")
    for task in tasks.values():
        (container,) = task["ContainerDefinitions"]
        env = {item["Name"] for item in container["Environment"]}
        if "EXCAMERA_ENCODER_FUNCTION" not in env:
            continue
        role = task["TaskRoleArn"]["Fn::GetAtt"][0]
        if container["Command"][1] in ("splitter", "rebaser"):  # the API only warms it up
            assert "P-encode" in _queue_arns_allowed(template, role, "sqs:SendMessage"), role
        invokes = [r for s in _statements(template, role)
                   if "lambda:InvokeFunction" in _as_list(s["Action"])
                   for r in _as_list(s["Resource"])]
        assert {"Fn::GetAtt": ["Encoder", "Arn"]} in invokes, role
    (rebaser,) = [t for t in tasks.values() if t["ContainerDefinitions"][0]["Command"]
                  == ["service", "rebaser"]]
    assert "EXCAMERA_ENCODER_FUNCTION" in {e["Name"] for e in
                                           rebaser["ContainerDefinitions"][0]["Environment"]}


def test_a_missing_object_is_a_404_to_every_role(template: dict[str, Any]) -> None:
    """S3 answers a GET or HEAD of a missing key with 404 only to a caller that may list the
    bucket, and such a request carries no s3:prefix: a ListBucket limited by a prefix
    condition makes every 'does it exist yet?' an AccessDenied, which the store raises."""
    for role in ROLES:
        lists = [s for s in _statements(template, role)
                 if "s3:ListBucket" in _as_list(s["Action"])]
        assert lists, role
        assert any("Condition" not in s for s in lists), role


class _Deletions:
    """A store that records the prefixes deleted from it."""

    def __init__(self) -> None:
        self.prefixes: list[str] = []

    def delete_prefix(self, prefix: str) -> int:
        self.prefixes.append(prefix)
        return 0


def _s3_allowed(template: dict[str, Any], role: str, action: str) -> list[str]:
    return [r["Fn::Sub"].split("/", 1)[1] for s in _statements(template, role)
            if action in _as_list(s["Action"]) for r in _as_list(s["Resource"])
            if isinstance(r, dict) and "Fn::Sub" in r and "JobBucket" in r["Fn::Sub"]]


@pytest.mark.parametrize("purge, roles", [
    ("purge_job", ("ApiTaskRole",)),  # cancel, the janitor, a submission that failed
    ("purge_intermediates", ROLES),  # what a late task wrote (services/adapter.py)
])
def test_whoever_purges_may_delete_what_it_purges(template: dict[str, Any], purge: str,
                                                  roles: tuple[str, ...]) -> None:
    """Before, the API could neither list nor delete uploads: every clean-up failed."""
    import fnmatch
    from types import SimpleNamespace

    from services import adapter

    store = _Deletions()
    getattr(adapter, purge)(SimpleNamespace(store=store), "j-x")
    assert store.prefixes
    for role in roles:
        allowed = _s3_allowed(template, role, "s3:DeleteObject")
        for prefix in store.prefixes:
            assert any(fnmatch.fnmatchcase(prefix + "key", pattern) for pattern in allowed), (
                role, prefix)


def test_the_services_reach_the_sqs_endpoint(template: dict[str, Any]) -> None:
    """With private DNS the endpoint is SQS for the whole VPC: every security group that
    runs our code must be admitted on 443, or its SQS calls time out."""
    groups = resources(template, "AWS::EC2::SecurityGroup")
    (endpoint,) = [e for e in resources(template, "AWS::EC2::VPCEndpoint").values()
                   if e["VpcEndpointType"] == "Interface"]
    assert endpoint["PrivateDnsEnabled"] is True
    (endpoint_group,) = [g["Ref"] for g in endpoint["SecurityGroupIds"]]
    admitted = {rule["SourceSecurityGroupId"]["Fn::GetAtt"][0]
                for rule in groups[endpoint_group]["SecurityGroupIngress"]
                if rule["FromPort"] <= 443 <= rule["ToPort"]}
    running = {g["Ref"] for f in resources(template, "AWS::Lambda::Function").values()
               for g in f["VpcConfig"]["SecurityGroupIds"]}
    running |= {g["Ref"] for s in resources(template, "AWS::ECS::Service").values()
                for g in s["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]}
    assert running and running <= admitted, running - admitted


def test_the_services_fail_a_job_before_sqs_sets_its_task_aside(template: dict[str, Any]
                                                                ) -> None:
    """The adapter fails a job on the delivery past EXCAMERA_MAX_ATTEMPTS; a redrive at or
    below that moved the message to the dead-letter queue unseen, and the job ran for ever."""
    from services.config import ServiceConfig

    limit = ServiceConfig().max_attempts
    for properties in resources(template, "AWS::SQS::Queue").values():
        name = queue_name(properties)
        if name.split("-", 1)[1] in ("split", "encode", "decode", "join", "rebase.fifo"):
            assert properties["RedrivePolicy"]["maxReceiveCount"] > limit, name


def test_the_cost_is_priced_at_the_functions_memory(template: dict[str, Any]) -> None:
    """Job costs and budget caps price Lambda GB-seconds at EXCAMERA_*_MEMORY_MB: every
    process of the stack must be told the memory its functions were given (it used 1,769 MB
    whatever they were)."""
    from services.config import ServiceConfig

    wanted = {"EXCAMERA_ENCODER_MEMORY_MB": {"Ref": "EncoderMemoryMB"},
              "EXCAMERA_DECODER_MEMORY_MB": {"Ref": "DecoderMemoryMB"}}
    assert set(wanted) <= set(ServiceConfig().to_env())
    envs = [f["Environment"]["Variables"]
            for f in resources(template, "AWS::Lambda::Function").values()]
    envs += [{e["Name"]: e["Value"] for e in task["ContainerDefinitions"][0]["Environment"]}
             for task in resources(template, "AWS::ECS::TaskDefinition").values()]
    assert len(envs) == 5
    for env in envs:
        assert {name: env.get(name) for name in wanted} == wanted
    functions = resources(template, "AWS::Lambda::Function")
    assert functions["Encoder"]["MemorySize"] == {"Ref": "EncoderMemoryMB"}
    assert functions["Decoder"]["MemorySize"] == {"Ref": "DecoderMemoryMB"}


def test_the_stacks_input_prefixes_admit_what_they_name(template: dict[str, Any]) -> None:
    """EXCAMERA_ALLOW_INPUT as the stack sets it: 'https://' is any public https host. Its
    normalisation failed ('the URL names no host'), so every https input was refused."""
    from services.config import ServiceConfig
    from services.inputs import UrlPolicy

    tasks = resources(template, "AWS::ECS::TaskDefinition")
    values = {e["Value"]["Fn::Sub"] for task in tasks.values()
              for e in task["ContainerDefinitions"][0]["Environment"]
              if e["Name"] == "EXCAMERA_ALLOW_INPUT"}
    assert values
    for value in values:
        config = ServiceConfig.from_env({"EXCAMERA_ALLOW_INPUT":
                                         value.replace("${JobBucket}", "the-bucket")})
        policy = UrlPolicy(allow_input=config.allow_input)
        assert policy.check_input("https://93.184.215.14/in/a.mp4")
        assert policy.check_input("s3://the-bucket/uploads/j-x/input-0")
