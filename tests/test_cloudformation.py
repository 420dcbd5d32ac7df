"""The weekly trigger as code (conf/cloudformation/leadpipe.yaml): cfn-lint finds no error, the
state machine definition is valid Amazon States Language (statelint, the PyPI port of awslabs'
validator), and the properties a regression would break are asserted: every failure alerts and
terminates the cluster, the cluster is the tested EMR release, buckets are private, encrypted and
TLS-only, and IAM grants no ``"*"`` resource beyond what AWS requires. No network, no Spark."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from cfnlint.api import lint_file
from cfnlint.decode import cfn_yaml
from statelint.linter import Linter

from leadpipe.cli import weekly_parser
from leadpipe.postgres import DbTarget

TEMPLATE = Path(__file__).resolve().parent.parent / "conf" / "cloudformation" / "leadpipe.yaml"

# cfn-lint warnings accepted, rule id -> reason. None today: a new warning fails the test until it
# is fixed or listed here with its reason.
ALLOWED_CFN_LINT_WARNINGS: dict[str, str] = {}

# IAM statements allowed to use Resource "*", (role, action) -> reason.
ALLOWED_STAR_RESOURCES = {
    ("StateMachineRole", "elasticmapreduce:RunJobFlow"): "RunJobFlow supports no resource-level permissions: "
    "the cluster does not exist yet when it is called",
}

# Task states of the failure path itself: their Catch cannot lead back to the notify state (that
# would loop); each carries on towards the Fail state instead. state -> where its Catch must lead.
FAILURE_PATH_CATCH = {"NotifyFailure": "ClusterCreated", "TerminateClusterAfterFailure": "RunFailed"}
NOTIFY_STATE = "NotifyFailure"

# Plausible values for the parameters without a default.
SAMPLE_PARAMETERS = {
    "SubnetId": "subnet-0123456789abcdef0",
    "DbUrl": "postgresql://leadpipe@leads-db.example.internal:5432/leads",
}
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "leadpipe-prod",
    "AWS::URLSuffix": "amazonaws.com",
}


@pytest.fixture(scope="module")
def template() -> dict:
    return cfn_yaml.load(str(TEMPLATE))


def resources(template, kind: str) -> dict:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def parameter_value(template, name: str):
    return SAMPLE_PARAMETERS.get(name, template["Parameters"][name].get("Default"))


def ref_value(template, name: str) -> str:
    """What ``Ref`` (or ``${name}`` in Fn::Sub) gives for a parameter, pseudo parameter or resource."""
    if name in PSEUDO:
        return PSEUDO[name]
    if name in template["Parameters"]:
        return str(parameter_value(template, name))
    kind = template["Resources"][name]["Type"]
    region, account = PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
    return {
        "AWS::S3::Bucket": f"leadpipe-prod-{name.lower()}-1a2b3c4d5e6f",
        "AWS::SNS::Topic": f"arn:aws:sns:{region}:{account}:leadpipe-prod-{name}-ABC123",
        "AWS::SecretsManager::Secret": f"arn:aws:secretsmanager:{region}:{account}:secret:{name}-AbCdEf",
        "AWS::IAM::Role": f"leadpipe-prod-{name}-ABC123",
        "AWS::IAM::InstanceProfile": f"leadpipe-prod-{name}-ABC123",
        "AWS::StepFunctions::StateMachine": f"arn:aws:states:{region}:{account}:stateMachine:{name}-ABC123",
    }[kind]


def substitute(template, text: str) -> str:
    """Fn::Sub with plausible values; an unknown name fails (as CloudFormation would)."""

    def one(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        assert "." not in name, f"unexpected attribute reference ${{{name}}} in the definition"
        return ref_value(template, name)

    return re.sub(r"\$\{([^}]+)\}", one, text)


@pytest.fixture(scope="module")
def definition(template) -> dict:
    (machine,) = resources(template, "AWS::StepFunctions::StateMachine").values()
    body = machine["Properties"]["DefinitionString"]["Fn::Sub"]
    assert isinstance(body, str), "DefinitionString must be a plain !Sub string (extractable)"
    return json.loads(substitute(template, body))


# ---------------------------------------------------------------- validators


def test_cfn_lint_reports_no_errors_and_only_listed_warnings():
    matches = lint_file(TEMPLATE)
    problems = [
        f"{m.rule.id} {m.message} (line {m.linenumber})"
        for m in matches
        if m.rule.id[0] == "E" or (m.rule.id[0] == "W" and m.rule.id not in ALLOWED_CFN_LINT_WARNINGS)
    ]
    assert problems == []


def test_cfn_lint_does_report_a_broken_template(tmp_path):
    """The lint test above is not vacuous: the same template with an invalid encryption fails."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("SSEAlgorithm: AES256", "SSEAlgorithm: AES512", 1))
    assert any(m.rule.id.startswith("E") for m in lint_file(broken))


def test_state_machine_definition_is_valid_amazon_states_language(definition):
    assert Linter.validate(definition) == []


def test_states_language_validator_catches_a_broken_definition(definition):
    broken = copy.deepcopy(definition)
    broken["States"]["CreateCluster"]["Next"] = "NoSuchState"
    del broken["States"]["RunFailed"]["Error"]
    broken["States"]["RunFailed"]["Next"] = "Succeeded"
    assert len(Linter.validate(broken)) >= 2


def test_definition_placeholders_all_resolve(template):
    (machine,) = resources(template, "AWS::StepFunctions::StateMachine").values()
    body = machine["Properties"]["DefinitionString"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}!][^}]*)\}", body))
    known = set(PSEUDO) | set(template["Parameters"]) | set(template["Resources"])
    assert names - known == set()


# ---------------------------------------------------------------- workflow


def test_main_path_is_create_run_terminate(definition):
    states = definition["States"]
    assert definition["StartAt"] == "CreateCluster"
    path, name = [], "CreateCluster"
    while states[name]["Type"] == "Task":
        path.append((name, states[name]["Resource"].split(":::")[1]))
        name = states[name]["Next"]
    assert path == [
        ("CreateCluster", "elasticmapreduce:createCluster.sync"),
        ("RunWeeklyLeads", "elasticmapreduce:addStep.sync"),
        ("TerminateCluster", "elasticmapreduce:terminateCluster"),
    ]
    assert states[name]["Type"] == "Succeed"


def test_every_task_catches_everything_and_alerts(definition):
    states = definition["States"]
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task"}
    assert set(FAILURE_PATH_CATCH) <= set(tasks)
    for name, state in tasks.items():
        catch_all = [c for c in state.get("Catch", []) if "States.ALL" in c["ErrorEquals"]]
        assert len(catch_all) == 1, f"{name} has no Catch on States.ALL"
        expected = FAILURE_PATH_CATCH.get(name, NOTIFY_STATE)
        assert catch_all[0]["Next"] == expected, name
        # the cluster id must survive the error: the error goes beside it, never over the input
        assert catch_all[0]["ResultPath"] not in (None, "$") and not catch_all[0]["ResultPath"].startswith(
            "$.cluster"
        ), name
    for name, state in tasks.items():
        if name != "CreateCluster":
            assert state.get("ResultPath", "$") is None or (
                state["ResultPath"] != "$" and not state["ResultPath"].startswith("$.cluster")
            ), f"{name} would overwrite the cluster id"
    assert states["CreateCluster"]["ResultPath"] == "$.cluster"


def test_failure_path_publishes_then_terminates_the_cluster_if_any_then_fails(template, definition):
    states = definition["States"]
    notify = states[NOTIFY_STATE]
    assert notify["Resource"] == "arn:aws:states:::sns:publish"
    assert notify["Parameters"]["TopicArn"] == ref_value(template, "AlertsTopic")
    choice = states[notify["Next"]]
    assert choice["Type"] == "Choice"
    (rule,) = choice["Choices"]
    assert rule == {"Variable": "$.cluster.ClusterId", "IsPresent": True, "Next": "TerminateClusterAfterFailure"}
    terminate = states["TerminateClusterAfterFailure"]
    assert terminate["Resource"] == "arn:aws:states:::elasticmapreduce:terminateCluster"
    assert terminate["Parameters"] == {"ClusterId.$": "$.cluster.ClusterId"}
    assert states[terminate["Next"]]["Type"] == "Fail"
    assert states[choice["Default"]]["Type"] == "Fail"


def test_create_cluster_parameters(template, definition):
    params = definition["States"]["CreateCluster"]["Parameters"]
    assert params["ReleaseLabel"] == "emr-spark-8.1.0"
    assert params["StepConcurrencyLevel"] == 1
    assert params["Applications"] == [{"Name": "Spark"}]
    assert params["VisibleToAllUsers"] is True
    assert params["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert params["LogUri"].startswith(f"s3://{ref_value(template, 'LogsBucket')}/")
    assert params["ServiceRole"] == ref_value(template, "EmrServiceRole")
    assert params["JobFlowRole"] == ref_value(template, "EmrInstanceProfile")
    (bootstrap,) = params["BootstrapActions"]
    assert bootstrap["ScriptBootstrapAction"]["Path"].startswith(f"s3://{ref_value(template, 'DeployBucket')}/")
    assert ref_value(template, "DbPasswordSecret") in bootstrap["ScriptBootstrapAction"]["Args"]
    groups = {g["InstanceRole"]: g for g in params["Instances"]["InstanceGroups"]}
    assert groups["MASTER"]["InstanceType"] == parameter_value(template, "PrimaryInstanceType")
    assert groups["CORE"]["InstanceType"] == parameter_value(template, "CoreInstanceType")
    assert groups["CORE"]["InstanceCount"] == parameter_value(template, "CoreInstanceCount")
    body = template["Resources"]["WeeklyLeadsStateMachine"]["Properties"]["DefinitionString"]["Fn::Sub"]
    for name in ("PrimaryInstanceType", "CoreInstanceType", "CoreInstanceCount"):
        assert "${" + name + "}" in body, f"{name} is not wired into the cluster"


def test_step_runs_the_job_as_its_parser_expects(template, definition):
    step = definition["States"]["RunWeeklyLeads"]["Parameters"]["Step"]
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    args = step["HadoopJarStep"]["Args"]
    deploy, drop, lake = (ref_value(template, b) for b in ("DeployBucket", "DropBucket", "LakeBucket"))
    script = f"s3://{deploy}/jobs/weekly_leads.py"
    assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    assert "spark.driver.memory=4g" in args
    job_args = args[args.index(script) + 1 :]
    parsed = weekly_parser().parse_args(job_args)
    assert parsed.input == f"s3://{drop}/active/"
    assert parsed.warehouse == f"s3://{lake}/warehouse/"
    assert parsed.archive == f"s3://{drop}/historical/"
    assert parsed.db_url == SAMPLE_PARAMETERS["DbUrl"]
    assert args.count("--db-url") == 1


def test_db_url_parameter_accepts_what_the_job_accepts_and_no_password(template):
    pattern = template["Parameters"]["DbUrl"]["AllowedPattern"]
    assert re.fullmatch(pattern, SAMPLE_PARAMETERS["DbUrl"])
    DbTarget.from_url(SAMPLE_PARAMETERS["DbUrl"])
    assert not re.fullmatch(pattern, "postgresql://leadpipe:s3cret@leads-db.example.internal:5432/leads")


def test_secret_holds_a_json_password_the_job_reads(template):
    (secret,) = resources(template, "AWS::SecretsManager::Secret").values()
    generate = secret["Properties"]["GenerateSecretString"]
    assert generate["GenerateStringKey"] == "password"
    assert json.loads(substitute(template, generate["SecretStringTemplate"]["Fn::Sub"])) == {"username": "leadpipe"}


def test_weekly_schedule_starts_the_state_machine_with_its_own_narrow_role(template):
    (schedule,) = resources(template, "AWS::Scheduler::Schedule").values()
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    assert template["Parameters"]["ScheduleExpression"]["Default"] == "cron(0 6 ? * MON *)"
    assert parameter_value(template, "ScheduleTimezone") == "UTC"
    assert props["Target"]["Arn"] == {"Ref": "WeeklyLeadsStateMachine"}
    assert props["Target"]["RoleArn"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    assert statements(template, "SchedulerRole") == [
        {"Effect": "Allow", "Action": "states:StartExecution", "Resource": {"Ref": "WeeklyLeadsStateMachine"}}
    ]
    assert "ManagedPolicyArns" not in template["Resources"]["SchedulerRole"]["Properties"]


def test_topic_is_encrypted_with_the_aws_managed_key(template):
    (topic,) = resources(template, "AWS::SNS::Topic").values()
    assert topic["Properties"]["KmsMasterKeyId"] == "alias/aws/sns"


def test_outputs(template):
    assert {
        "DropBucketName",
        "LakeBucketName",
        "DeployBucketName",
        "LogsBucketName",
        "AlertsTopicArn",
        "StateMachineArn",
        "DbPasswordSecretArn",
    } <= set(template["Outputs"])


# ---------------------------------------------------------------- buckets


def test_every_bucket_is_encrypted_private_and_tls_only(template):
    buckets = resources(template, "AWS::S3::Bucket")
    assert set(buckets) == {"DropBucket", "LakeBucket", "DeployBucket", "LogsBucket"}
    policies = {p["Properties"]["Bucket"]["Ref"]: p for p in resources(template, "AWS::S3::BucketPolicy").values()}
    for name, bucket in buckets.items():
        props = bucket["Properties"]
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms", "aws:kms:dsse"}, name
        block = props["PublicAccessBlockConfiguration"]
        assert {
            k: block.get(k)
            for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
        } == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        assert name in policies, f"{name} has no bucket policy"
        deny_insecure = [
            s
            for s in policies[name]["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny"
            and s["Principal"] == "*"
            and s["Action"] in ("s3:*", ["s3:*"])
            and str(s["Condition"]["Bool"]["aws:SecureTransport"]).lower() == "false"
        ]
        assert len(deny_insecure) == 1, name
        assert deny_insecure[0]["Resource"] == [
            {"Fn::GetAtt": [name, "Arn"]},
            {"Fn::Sub": "${" + name + ".Arn}/*"},
        ], name


def test_lake_is_versioned_and_archives_age_out(template):
    assert template["Resources"]["LakeBucket"]["Properties"]["VersioningConfiguration"]["Status"] == "Enabled"
    rules = template["Resources"]["DropBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (historical,) = [r for r in rules if r.get("Prefix") == "historical/"]
    assert historical["Status"] == "Enabled"
    (transition,) = historical["Transitions"]
    assert transition["TransitionInDays"] == {"Ref": "HistoricalTransitionDays"}
    assert transition["StorageClass"] == {"Ref": "HistoricalStorageClass"}
    assert set(template["Parameters"]["HistoricalStorageClass"]["AllowedValues"]) <= {"GLACIER", "STANDARD_IA"}
    assert historical["ExpirationInDays"] == {"Ref": "HistoricalExpirationDays"}
    assert (
        template["Parameters"]["HistoricalExpirationDays"]["Default"]
        > template["Parameters"]["HistoricalTransitionDays"]["Default"]
    )


# ---------------------------------------------------------------- IAM


def statements(template, role: str) -> list[dict]:
    return [
        s
        for p in template["Resources"][role]["Properties"].get("Policies", [])
        for s in p["PolicyDocument"]["Statement"]
    ]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("role", ["EmrInstanceRole", "StateMachineRole", "EmrServiceRole", "SchedulerRole"])
def test_no_star_resource_or_action_beyond_what_aws_requires(template, role):
    for statement in statements(template, role):
        assert statement["Effect"] == "Allow"
        actions = as_list(statement["Action"])
        assert not any(a == "*" or a.endswith(":*") for a in actions), (role, actions)
        if "*" in as_list(statement["Resource"]):
            for action in actions:
                assert (role, action) in ALLOWED_STAR_RESOURCES, f"{role} grants {action} on Resource '*'"


def test_instance_role_reaches_only_its_prefixes_secret_and_topic(template):
    by_action: dict[str, list] = {}
    for statement in statements(template, "EmrInstanceRole"):
        for action in as_list(statement["Action"]):
            by_action.setdefault(action, []).extend(as_list(statement["Resource"]))
    assert by_action["secretsmanager:GetSecretValue"] == [{"Ref": "DbPasswordSecret"}]
    assert by_action["sns:Publish"] == [{"Ref": "AlertsTopic"}]
    assert {r["Fn::Sub"] for r in by_action["s3:PutObject"]} == {
        "${DropBucket.Arn}/active/*",
        "${DropBucket.Arn}/historical/*",
        "${LakeBucket.Arn}/warehouse/*",
        "${LakeBucket.Arn}/reports/*",
        "${LogsBucket.Arn}/emr/*",
    }
    assert {r["Fn::Sub"] for r in by_action["s3:DeleteObject"]} == {
        "${DropBucket.Arn}/active/*",
        "${DropBucket.Arn}/historical/*",
        "${LakeBucket.Arn}/warehouse/*",
        "${LakeBucket.Arn}/reports/*",
    }
    assert "${DeployBucket.Arn}/*" in {r["Fn::Sub"] for r in by_action["s3:GetObject"]}
    assert not any(a.startswith(("iam:", "kms:")) for a in by_action)


def test_state_machine_role(template):
    by_action: dict[str, list] = {}
    for statement in statements(template, "StateMachineRole"):
        for action in as_list(statement["Action"]):
            by_action.setdefault(action, []).extend(as_list(statement["Resource"]))
    for action in ("DescribeCluster", "TerminateJobFlows", "AddJobFlowSteps", "DescribeStep", "CancelSteps"):
        assert by_action[f"elasticmapreduce:{action}"] == [
            {"Fn::Sub": "arn:${AWS::Partition}:elasticmapreduce:${AWS::Region}:${AWS::AccountId}:cluster/*"}
        ]
    assert by_action["elasticmapreduce:RunJobFlow"] == ["*"]
    assert by_action["iam:PassRole"] == [
        {"Fn::GetAtt": ["EmrServiceRole", "Arn"]},
        {"Fn::GetAtt": ["EmrInstanceRole", "Arn"]},
    ]
    assert by_action["sns:Publish"] == [{"Ref": "AlertsTopic"}]
    for action in ("events:PutTargets", "events:PutRule", "events:DescribeRule"):
        (rule,) = by_action[action]
        assert rule["Fn::Sub"].endswith(":rule/StepFunctionsGetEventsForEMR*"), action


def test_emr_service_role_uses_the_v2_policy_and_passes_only_the_instance_role(template):
    props = template["Resources"]["EmrServiceRole"]["Properties"]
    assert props["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"}
    ]
    (statement,) = statements(template, "EmrServiceRole")
    assert statement["Action"] == "iam:PassRole"
    assert statement["Resource"] == {"Fn::GetAtt": ["EmrInstanceRole", "Arn"]}
    profile = template["Resources"]["EmrInstanceProfile"]["Properties"]
    assert profile["Roles"] == [{"Ref": "EmrInstanceRole"}]


def test_step_is_the_one_leads_emr_generates_from_settings(template, definition, settings):
    """The state machine runs exactly the step ``leads-emr`` builds from settings, so a change to
    one (a jar, a Spark setting, an argument) cannot leave the other behind."""
    from leadpipe.emr import weekly_step

    deploy, drop, lake = (ref_value(template, b) for b in ("DeployBucket", "DropBucket", "LakeBucket"))
    emr = settings.emr.model_copy(
        update={
            "deploy_uri": f"s3://{deploy}/",
            "input": f"s3://{drop}/active/",
            "warehouse": f"s3://{lake}/warehouse/",
            "archive": f"s3://{drop}/historical/",
        }
    )
    configured = settings.model_copy(update={"emr": emr})
    expected = weekly_step(configured, db_url=SAMPLE_PARAMETERS["DbUrl"])
    assert definition["States"]["RunWeeklyLeads"]["Parameters"]["Step"] == expected
    bootstrap = definition["States"]["CreateCluster"]["Parameters"]["BootstrapActions"][0]["ScriptBootstrapAction"]
    assert bootstrap["Path"] == f"s3://{deploy}/bootstrap/install_leadpipe.sh"  # where make deploy puts it
    assert bootstrap["Args"][0] == f"s3://{deploy}/"
