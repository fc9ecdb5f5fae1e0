"""Container and AWS infrastructure, checked with real tools: cfn-lint, a CloudFormation deploy
under moto (asserting what moto models), reading the template for what it ignores, hadolint,
`make -n`, and bash -n / shellcheck on the instance user data."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "facegan.yaml"
BIN = Path(sys.executable).parent
# moto knows this public SSM AMI parameter; the Deep Learning AMI path of the default does not exist there
MOTO_AMI_PARAM = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-x86_64"


def template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def resource(name: str) -> dict:
    return template()["Resources"][name]["Properties"]


def test_cfn_lint_passes():
    out = subprocess.run([str(BIN / "cfn-lint"), str(TEMPLATE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/facegan:test"


@contextmanager
def deployed(monkeypatch, capacity: str, prepare: bool = False):
    """The template deployed under moto's in-process mock (spot on, no CDN) with
    `Capacity=capacity` and `PrepareOnWorker=prepare`; yields {logical id: physical id}."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)  # in-process mock, not the server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        ec2 = boto3.client("ec2")
        vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
        subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
        cf = boto3.client("cloudformation")
        params = {"BucketName": "facegan-test-bucket", "VpcId": vpc, "SubnetId": subnet,
                  "LatestAmiId": MOTO_AMI_PARAM, "EcsGpuAmiId": MOTO_AMI_PARAM, "UseSpot": "true",
                  "Capacity": capacity, "ImageUri": IMAGE, "PrepareOnWorker": str(prepare).lower()}
        # moto resolves SSM-typed parameter defaults too, and the Deep Learning and ECS GPU AMI
        # paths are not in moto (nor may they be created: reserved names), so only those
        # defaults are swapped here
        body = TEMPLATE.read_text()
        for name in ("LatestAmiId", "EcsGpuAmiId"):
            default = template()["Parameters"][name]["Default"]
            assert body.count(default) == 1
            body = body.replace(default, MOTO_AMI_PARAM)
        cf.create_stack(StackName="facegan", TemplateBody=body,
                        Capabilities=["CAPABILITY_NAMED_IAM"],
                        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()])
        status = cf.describe_stacks(StackName="facegan")["Stacks"][0]["StackStatus"]
        assert status == "CREATE_COMPLETE"
        physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                    for r in cf.list_stack_resources(StackName="facegan")["StackResourceSummaries"]}
        yield physical


@pytest.fixture
def stack(monkeypatch):
    """The one-box stack (one always-on GPU instance running the Docker worker)."""
    with deployed(monkeypatch, "one-box") as physical:
        yield physical


@pytest.fixture
def ecs_stack(monkeypatch):
    """The scale-to-zero stack (the default)."""
    with deployed(monkeypatch, "ecs") as physical:
        yield physical


def _statements(doc) -> list[dict]:
    """Statements of a policy document. moto returns CloudFormation-made inline policies as a
    Python repr with AWS::NoValue left as None (AWS drops those list items), hence the fallback."""
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError:
            doc = ast.literal_eval(doc)
    st = doc["Statement"]
    return [x for x in (st if isinstance(st, list) else [st]) if x is not None]


def test_moto_models_bucket_and_encryption(stack):
    """Modelled by moto: the bucket and its default encryption."""
    s3 = boto3.client("s3")
    assert stack["Bucket"] == "facegan-test-bucket"
    rules = s3.get_bucket_encryption(Bucket="facegan-test-bucket")["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def role_statements(iam, role_name: str) -> list[dict]:
    """Every statement of a role: its inline policies and its customer-managed ones (AWS-managed
    policies, named in the template, are checked there)."""
    statements = []
    for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        statements += _statements(iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"])
    for attached in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]:
        if ":aws:policy/" in attached["PolicyArn"]:
            continue
        policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
        version = iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=policy["DefaultVersionId"])
        statements += _statements(version["PolicyVersion"]["Document"])
    return statements


def test_moto_models_least_privilege_role(stack):
    iam = boto3.client("iam")
    role_name = stack["WorkerRole"]
    role = iam.get_role(RoleName=role_name)["Role"]
    trust = _statements(role["AssumeRolePolicyDocument"])
    assert trust == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                      "Action": "sts:AssumeRole"}]
    statements = role_statements(iam, role_name)
    bucket_arn = "arn:aws:s3:::facegan-test-bucket"
    allowed = {}
    for st in statements:
        assert st["Effect"] == "Allow"
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for a in actions:
            assert "*" not in a, f"wildcard action {a}"
        for r in resources:
            assert r != "*"
            assert r == bucket_arn or r.startswith(f"{bucket_arn}/") or r.startswith("arn:aws:ssm:"), r
            if r.startswith(f"{bucket_arn}/"):
                assert r.split("/", 1)[1] in {"datasets/*", "models/*", "runs/*", "galleries/*"}, r
        for a in actions:
            allowed.setdefault(a, set()).update(resources)
        if "s3:ListBucket" in actions:
            prefixes = st["Condition"]["StringLike"]["s3:prefix"]
            assert "runs/*" in prefixes and all("*" not in p or p.endswith("/*") for p in prefixes)
    assert allowed["s3:GetObject"] == {f"{bucket_arn}/{p}/*" for p in ("datasets", "models", "runs", "galleries")}
    assert allowed["s3:PutObject"] == {f"{bucket_arn}/runs/*", f"{bucket_arn}/galleries/*"}  # datasets read-only
    assert allowed["ssm:GetParameter"] == {
        "arn:aws:ssm:us-east-1:123456789012:parameter/facegan/prefect-api-url",
        "arn:aws:ssm:us-east-1:123456789012:parameter/facegan/prefect-api-key",
    }
    profile = iam.get_instance_profile(InstanceProfileName=stack["WorkerInstanceProfile"])["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [role_name]


def job_user(monkeypatch, physical: dict, *policies: str) -> list[str]:
    """From here on, boto3 acts as an IAM user that holds only the template's managed `policies`
    (logical ids) as deployed. moto does not evaluate condition keys (it denies every request a
    `Condition` guards), so the one conditioned statement, ListBucket's, is taken without its
    condition, whose `s3:prefix` patterns are returned for `enforced` to check the listings with."""
    iam = boto3.client("iam")
    statements = []
    for name in policies:
        version = iam.get_policy(PolicyArn=physical[name])["Policy"]["DefaultVersionId"]
        doc = iam.get_policy_version(PolicyArn=physical[name], VersionId=version)["PolicyVersion"]["Document"]
        statements += _statements(doc)
    conditions = {st["Sid"]: st.pop("Condition") for st in statements if "Condition" in st}
    assert list(conditions) == ["ListOwnPrefixes"] and list(conditions["ListOwnPrefixes"]) == ["StringLike"]
    iam.create_user(UserName="job")
    iam.put_user_policy(UserName="job", PolicyName="job",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    key = iam.create_access_key(UserName="job")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    return conditions["ListOwnPrefixes"]["StringLike"]["s3:prefix"]


def enforced(fn, monkeypatch, prefixes: list[str]):
    """`fn()` with moto checking every request against the caller's IAM policies; the condition
    moto leaves out is checked here: each listing's prefix, and each read object's key (for a
    missing object S3 answers 404, not 403, only where ListBucket would be allowed with the key as
    its prefix), must match one of `prefixes` (StringLike: `*` any run of characters, `?` one).
    A HeadBucket (s3:ListBucket without a prefix: refused) only tells a missing bucket from a
    missing key after an error, and a refusal answers that too. Returns fn's result."""
    import fnmatch

    from botocore.client import BaseClient
    from moto.core import set_initial_no_auth_action_count

    listed = []
    call = BaseClient._make_api_call

    def spy(self, operation, params):
        if operation in ("ListObjectsV2", "ListObjects"):
            listed.append(params.get("Prefix"))
        elif operation in ("HeadObject", "GetObject"):
            listed.append(params["Key"])
        return call(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", spy)
    result = set_initial_no_auth_action_count(0)(fn)()
    monkeypatch.setattr(BaseClient, "_make_api_call", call)
    outside = [p for p in listed if p is None or not any(fnmatch.fnmatchcase(p, pattern.replace("[", "[[]"))
                                                         for pattern in prefixes)]
    assert listed and not outside, f"outside the policy's s3:prefix condition: {outside}"
    return result


def test_the_jobs_policy_lets_a_run_train_score_export_and_publish_and_keeps_the_dataset_read_only(
        monkeypatch, raw_faces, fid_weights, tmp_path):
    """The jobs' S3 policy as the template deploys it (StoreAccess), enforced by moto on every S3
    request: prepare (an admin's job) writes datasets/, then a job trains a run from it with FID
    (the Inception weights read from models/; the real features cached on the machine, as the
    dataset is read-only to the job), resumes it, exports it and publishes a gallery; the
    dataset's own files cannot be written."""
    from helpers import tiny_config

    from facegan import gallery, runfolder
    from facegan.data import read_manifest
    from facegan.errors import StorageError
    from facegan.export import export
    from facegan.loop import Hooks, fit
    from facegan.prepare import prepare
    from facegan.storage import open_store

    store = "s3://facegan-test-bucket"
    with deployed(monkeypatch, "ecs") as physical:
        dataset = f"{store}/datasets/faces-32"
        prepare(raw_faces, dataset, resolution=32, workers=1, limit=32, log=lambda *_: None)
        prepared = {key: open_store(dataset).get_bytes(key) for key in open_store(dataset).list()}
        weights = f"{store}/models/{Path(fid_weights).name}"  # where the README puts the Inception weights
        open_store(store).put_file(f"models/{Path(fid_weights).name}", fid_weights)
        prefixes = job_user(monkeypatch, physical, "StoreAccess")
        monkeypatch.setenv("FACEGAN_CACHE", str(tmp_path / "cache"))
        run = f"{store}/runs/job"
        logs: list[str] = []

        def job():
            with pytest.raises(StorageError, match="manifest.json: access denied"):
                open_store(dataset).put_bytes("manifest.json", b"{}")  # the policy is in force
            cfg = tiny_config(dataset, run, steps=2, ckpt_every=2, metrics="fid", metric_every=2,
                              metric_samples=16, metric_weights=weights, metric_resize=75)
            assert fit(cfg, Hooks(log=logs.append)).finished
            assert fit(cfg.replace(steps=4), Hooks(log=logs.append)).finished  # a second session
            export(run, f"{run}/export", log=lambda *_: None)
            published = gallery.publish(store, run_name="job")
            assert open_store(store).exists(f"galleries/{published['date']}/index.html")
            return {key: open_store(dataset).get_bytes(key) for key in open_store(dataset).list()}

        assert enforced(job, monkeypatch, prefixes) == prepared  # the job wrote nothing into the dataset
        _, scored = runfolder.read_metrics(open_store(run))
        assert {name: [r["step"] for r in rows] for name, rows in scored.items()} == {"fid": [2, 4]}
        assert open_store(f"{run}/export").exists("model_card.json")
        cached = tmp_path / "cache" / "features" / read_manifest(open_store(dataset))["id"] / "inception-"
        said = [line for line in logs if line.startswith("metrics:")]
        assert "datasets/faces-32/inception-" in said[1] and "access denied" in said[1], said
        assert said[2].startswith(f"metrics: real statistics cached as {cached}"), said
        assert said[3].startswith(f"metrics: real statistics from {cached}"), said  # the second session


def test_with_prepare_on_the_worker_the_jobs_policy_lets_prepare_celeba_build_and_rebuild(
        monkeypatch, makeup_raw, tmp_path):
    """PrepareOnWorker=true: the jobs' policies as deployed (StoreAccess and PrepareAccess),
    enforced by moto: prepare-celeba's steps download raw CelebA from raw/, build the dataset
    with its attribute table, and build it again (the earlier build's shards removed, the
    dataset's lease released); raw/ stays read-only."""
    import zipfile

    from facegan.attributes import TABLE_NAME
    from facegan.data import read_manifest
    from facegan.errors import StorageError
    from facegan.storage import open_store
    from flows.prepare_celeba import build, download_source

    store = "s3://facegan-test-bucket"
    with deployed(monkeypatch, "ecs", prepare=True) as physical:
        zpath = tmp_path / "img_align_celeba.zip"
        with zipfile.ZipFile(zpath, "w") as zf:
            for p in sorted(makeup_raw.iterdir()):
                zf.write(p, f"img_align_celeba/{p.name}")
        open_store(store).put_file("raw/img_align_celeba.zip", zpath)
        open_store(store).put_file(f"raw/{TABLE_NAME}", makeup_raw.parent / TABLE_NAME)
        prefixes = job_user(monkeypatch, physical, "StoreAccess", "PrepareAccess")
        dataset, source = f"{store}/datasets/faces-32", f"{store}/raw/img_align_celeba.zip"

        def job():
            local = download_source.fn(source, str(tmp_path / "download"))
            for limit in (16, 8):  # the second: a rebuild, over the first
                build.fn(local, dataset, 32, limit, 1, source, f"{store}/raw/{TABLE_NAME}")
            with pytest.raises(StorageError, match="access denied"):
                open_store(store).put_bytes("raw/notes.txt", b"x")  # the policy is in force
            return read_manifest(open_store(dataset)), open_store(dataset).list()

        manifest, listed = enforced(job, monkeypatch, prefixes)
        assert manifest["count"] == 8 and "attributes" in manifest
        assert listed == sorted(["manifest.json", manifest["attributes"]["file"],  # no lease, no earlier build
                                 *(s["name"] for s in manifest["shards"])])


def test_moto_models_network_and_launch_template(stack):
    ec2 = boto3.client("ec2")
    sg = ec2.describe_security_groups(GroupIds=[stack["WorkerSecurityGroup"]])["SecurityGroups"][0]
    assert sg["IpPermissions"] == []  # no ingress at all
    lt = ec2.describe_launch_template_versions(LaunchTemplateId=stack["WorkerLaunchTemplate"])
    data = lt["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2 only
    assert data["InstanceType"] == "g5.xlarge"
    assert re.fullmatch(r"ami-[0-9a-f]+", data["ImageId"])  # resolved from the SSM AMI parameter
    assert data["IamInstanceProfile"]["Arn"].endswith("/" + stack["WorkerInstanceProfile"])
    assert data["SecurityGroupIds"] == [stack["WorkerSecurityGroup"]]
    assert data["InstanceMarketOptions"]["MarketType"] == "spot"
    asg = boto3.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[stack["WorkerGroup"]])["AutoScalingGroups"][0]
    assert asg["LaunchTemplate"]["LaunchTemplateId"] == stack["WorkerLaunchTemplate"]
    assert (asg["MinSize"], asg["MaxSize"]) == (1, 1)


def test_template_what_moto_ignores():
    """Not modelled by moto (checked by reading the template): versioning, public access block,
    lifecycle, bucket policy, CloudFront with origin access control, the AMI parameter default,
    the role's managed policy (Session Manager), the security group's egress rules."""
    managed = resource("WorkerRole")["ManagedPolicyArns"]
    assert managed == [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"}]
    egress = resource("WorkerSecurityGroup")["SecurityGroupEgress"]
    assert sorted((e["FromPort"], e["ToPort"]) for e in egress) == [(80, 80), (443, 443)]
    assert "SecurityGroupIngress" not in resource("WorkerSecurityGroup")
    bucket = resource("Bucket")
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["PublicAccessBlockConfiguration"][k] is True for k in
               ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert "NoncurrentVersionExpiration" in rules["expire-old-versions"]
    policy = resource("BucketPolicy")["PolicyDocument"]["Statement"]
    # TLS only (moto skips S3::BucketPolicy): every S3 action by anyone over plain HTTP is denied,
    # on the bucket and on every object in it
    tls = policy[0]
    assert tls["Effect"] == "Deny" and tls["Principal"] == {"AWS": "*"} and tls["Action"] == "s3:*"
    assert tls["Resource"] == [{"Fn::GetAtt": ["Bucket", "Arn"]}, {"Fn::Sub": "${Bucket.Arn}/*"}]
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert resource("BucketPolicy")["Bucket"] == {"Ref": "Bucket"}
    cdn_stmt = policy[1]["Fn::If"][1]
    assert cdn_stmt["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    # CloudFront reads the galleries and the runs' exports they link, nothing else of the bucket
    assert cdn_stmt["Resource"] == [{"Fn::Sub": f"${{Bucket.Arn}}/{p}"} for p in ("galleries/*", "runs/*/export/*")]
    dist = resource("GalleryDistribution")["DistributionConfig"]
    assert all(o["OriginAccessControlId"] == {"Fn::GetAtt": ["GalleryOriginAccessControl", "Id"]}
               for o in dist["Origins"])
    assert dist["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    ami = template()["Parameters"]["LatestAmiId"]
    assert ami["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert "base-oss-nvidia-driver-gpu" in ami["Default"]
    user_data = resource("WorkerLaunchTemplate")["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert "PREFECT_API_KEY=" not in template()["Parameters"].__repr__()
    assert "aws ssm get-parameter --with-decryption" in user_data  # secrets read at boot


def test_moto_models_the_scale_to_zero_stack(ecs_stack):
    """Capacity=ecs (the default): no always-on GPU instance; the GPU Auto Scaling group starts at
    0; the only always-on part is one small Fargate task running the Prefect ECS worker."""
    assert not {"WorkerGroup", "WorkerLaunchTemplate", "WorkerRole"} & set(ecs_stack)  # no one-box parts
    asg = boto3.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[ecs_stack["GpuGroup"]])["AutoScalingGroups"][0]
    assert (asg["MinSize"], asg["MaxSize"]) == (0, 1) and asg["Instances"] == []
    assert asg["NewInstancesProtectedFromScaleIn"] is True  # required by managed termination protection
    ec2 = boto3.client("ec2")
    data = ec2.describe_launch_template_versions(
        LaunchTemplateId=ecs_stack["GpuLaunchTemplate"])["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    imds = data["MetadataOptions"]
    assert imds["HttpTokens"] == "required" and imds["HttpPutResponseHopLimit"] == 1
    assert "KeyName" not in data and data["InstanceMarketOptions"]["MarketType"] == "spot"
    assert data["IamInstanceProfile"]["Arn"].endswith("/" + ecs_stack["GpuInstanceProfile"])
    ecs = boto3.client("ecs")
    [service] = ecs.describe_services(cluster=ecs_stack["EcsCluster"],
                                      services=[ecs_stack["WorkerService"]])["services"]
    assert service["desiredCount"] == 1
    assert resource("WorkerService")["LaunchType"] == "FARGATE"  # moto's CloudFormation drops it
    worker = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    assert worker["memory"] == "1024"
    defined = resource("WorkerTaskDefinition")  # moto's CloudFormation drops these three
    assert (defined["Cpu"], defined["RequiresCompatibilities"], defined["NetworkMode"]) == \
        ("256", ["FARGATE"], "awsvpc")
    [container] = worker["containerDefinitions"]
    assert container["image"] == IMAGE
    assert container["command"] == ["prefect", "worker", "start", "--pool", "facegan-ecs", "--type", "ecs"]
    assert sorted(x["name"] for x in container["secrets"]) == ["PREFECT_API_KEY", "PREFECT_API_URL"]  # from SSM
    assert not any("KEY" in e["name"] for e in container.get("environment", []))  # the key only as a secret
    watched = resource("TaskEventsRule")  # crash detection: the cluster's task events reach the worker
    assert watched["EventPattern"]["detail"] == {"clusterArn": [{"Fn::GetAtt": ["EcsCluster", "Arn"]}]}
    assert watched["Targets"][0]["Arn"] == {"Fn::GetAtt": ["TaskEventsQueue", "Arn"]}
    env = resource("WorkerTaskDefinition")["ContainerDefinitions"][0]["Environment"]
    assert env == [{"Name": "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_QUEUE_NAME",
                    "Value": {"Fn::GetAtt": ["TaskEventsQueue", "QueueName"]}}]
    iam = boto3.client("iam")
    # the jobs' role: exactly the bucket access the one-box instance has
    task_role = iam.get_role(RoleName=ecs_stack["TaskRole"])["Role"]
    assert _statements(task_role["AssumeRolePolicyDocument"])[0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    store = {a for st in role_statements(iam, ecs_stack["TaskRole"]) for a in
             (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])}
    assert store == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
    # the worker's role: wildcards only where AWS has no resource-level permissions
    for st in role_statements(iam, ecs_stack["WorkerTaskRole"]):
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if st["Resource"] == "*":
            assert set(actions) <= {"ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition",
                                    "ecs:DeregisterTaskDefinition", "ecs:ListTaskDefinitions",
                                    "ec2:DescribeVpcs", "ec2:DescribeSubnets"}, actions
        if "iam:PassRole" in actions:
            assert st["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
            assert len(st["Resource"]) == 2 and all(":role/" in r for r in st["Resource"])


def test_template_scale_to_zero_what_moto_ignores():
    """Not modelled by moto: the capacity provider (managed scaling from 0), the cluster's
    providers, the ECS GPU AMI parameter and the instances' ECS agent settings."""
    cp = resource("GpuCapacityProvider")["AutoScalingGroupProvider"]
    assert cp["AutoScalingGroupArn"] == {"Ref": "GpuGroup"}
    assert cp["ManagedScaling"]["Status"] == "ENABLED" and cp["ManagedScaling"]["TargetCapacity"] == 100
    assert cp["ManagedTerminationProtection"] == "ENABLED" and cp["ManagedDraining"] == "ENABLED"
    assert resource("GpuGroup")["MinSize"] == "0" and "DesiredCapacity" not in resource("GpuGroup")
    assoc = resource("ClusterCapacity")
    assert assoc["CapacityProviders"] == ["FARGATE", "FARGATE_SPOT", {"Ref": "GpuCapacityProvider"}]
    assert assoc["DefaultCapacityProviderStrategy"] == [{"CapacityProvider": "FARGATE", "Weight": 1}]  # CPU by default
    ami = template()["Parameters"]["EcsGpuAmiId"]
    assert ami["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert ami["Default"] == "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
    user_data = resource("GpuLaunchTemplate")["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    for line in ("ECS_CLUSTER=${EcsCluster}", "ECS_ENABLE_GPU_SUPPORT=true", "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true",
                 "ECS_ENABLE_TASK_IAM_ROLE=true"):  # bridge-mode tasks get TaskRole from the agent
        assert line in user_data.splitlines() or f"              {line}" in user_data, line
    assert template()["Parameters"]["Capacity"]["Default"] == "ecs"
    rule = template()["Rules"]["EcsNeedsAnImage"]
    assert rule["Assertions"][0]["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ImageUri"}, ""]}]}


def test_prefect_yaml_points_deployments_at_the_right_capacity():
    """Every deployment runs in the pool FACEGAN_POOL names; the training and evaluation ones ask
    the ECS pool for one GPU on the GPU capacity provider, the gallery and prepare ones for
    Fargate (and none of them for a GPU), and on a Docker pool the GPU ones get the GPUs."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    gpu, cpu = {"train-dcgan", "train-cyclegan", "evaluate"}, {"nightly-gallery", "prepare-celeba"}
    assert set(deployments) == gpu | cpu
    for name, d in deployments.items():
        jv = d["work_pool"]["job_variables"]
        assert d["work_pool"]["name"] == "{{ $FACEGAN_POOL }}", name
        if name in gpu:
            assert jv["resource_requirements"] == [{"type": "GPU", "value": "1"}], name
            assert jv["capacity_provider_strategy"] == [{"capacityProvider": "{{ $FACEGAN_GPU_CAPACITY_PROVIDER }}",
                                                         "weight": 1, "base": 0}], name
            assert jv["container_create_kwargs"]["device_requests"][0]["capabilities"] == [["gpu"]], name
        else:
            assert jv["launch_type"] == "FARGATE" and "resource_requirements" not in jv, name
            assert "capacity_provider_strategy" not in jv and "device_requests" not in jv["container_create_kwargs"]


def user_data_script() -> str:
    """The user-data script with CloudFormation ${...} references filled with sample values."""
    text = resource("WorkerLaunchTemplate")["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    values = {"AWS::Region": "us-east-1", "PrefectApiUrlParameter": "/facegan/prefect-api-url",
              "PrefectApiKeyParameter": "/facegan/prefect-api-key", "RepoRef": "main",
              "RepoUrl": "https://example.invalid/facegan.git", "WorkPoolName": "gpu-docker"}
    used = set(re.findall(r"\$\{([A-Za-z:]+)\}", text))
    assert used == set(values), used  # every ${} is a template reference we know
    for k, v in values.items():
        text = text.replace("${" + k + "}", v)
    return text.replace("${!", "${")  # Fn::Sub's escape for a literal ${...}


def test_user_data_is_valid_shell(tmp_path):
    script = tmp_path / "user-data.sh"
    script.write_text(user_data_script())
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: `make system-deps` installs it (make test does)"
    out = subprocess.run([shellcheck, "-s", "bash", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    # the embedded spot watcher and container prune are scripts of their own (the prune also runs
    # against the engine in `make image-check`)
    for name in ("WATCH", "PRUNE"):
        embedded = re.search(rf"<<'{name}'\n(.*?)\n{name}\n", user_data_script(), re.S).group(1)
        (tmp_path / f"{name}.sh").write_text(embedded)
        out = subprocess.run([shellcheck, str(tmp_path / f"{name}.sh")], capture_output=True, text=True)
        assert out.returncode == 0, (name, out.stdout)
    assert "facegan-prune.timer" in user_data_script().split("systemctl enable --now")[-1]
    # the ECS GPU instances' user data: only the cluster is a template reference
    gpu = resource("GpuLaunchTemplate")["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert set(re.findall(r"\$\{([A-Za-z:]+)\}", gpu)) == {"EcsCluster"}
    (tmp_path / "gpu.sh").write_text(gpu.replace("${EcsCluster}", "facegan-Cluster-1"))
    out = subprocess.run([shellcheck, "-s", "bash", str(tmp_path / "gpu.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_dockerfile_hadolint_clean():
    out = subprocess.run([str(BIN / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 1000:1000$", text, re.M)  # non-root
    assert re.search(r'^ENTRYPOINT \["', text, re.M)  # JSON form
    assert re.search(r"^ARG PYTHON_IMAGE=python:[\w.-]+@sha256:[0-9a-f]{64}$", text, re.M)  # base pinned by digest
    assert "--system" not in text  # uid 1000 is not a system uid
    assert "PYTHONUNBUFFERED=1" in text
    reqs = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch==\S+$", reqs, re.M) and re.search(r"^torchvision==\S+$", reqs, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"data", "runs", "store", ".venv", ".cache", "demo"} <= set(ignored)
    # the 6 GB venv is copied from a stage that holds only the pinned requirements, so a code change
    # reuses its cached layer (with facegan installed in it, each rebuild added 6 GB and filled CI's disk)
    stages = dict(re.findall(r"^FROM \S+ AS (\w+)\n(.*?)(?=^FROM )", text, re.M | re.S))
    venv_stage = re.search(r"^COPY --from=(\w+) /opt/venv /opt/venv$", text, re.M).group(1)
    copied = re.findall(r"^COPY (.+)$", stages[venv_stage], re.M)
    assert copied == ["requirements.txt constraints.txt ./"], copied


def make_n(*args: str) -> str:
    out = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_docker_train_commands():
    gpu = make_n("docker-train", "GPU=1", "DATA_DIR=/mnt/data", "STORE_DIR=/mnt/store")
    run = [line for line in gpu.replace("\\\n", " ").splitlines() if line.startswith("docker run")][0]
    assert " --gpus all " in run and " --shm-size=8g " in run
    assert " -v /mnt/data:/data " in run and " -v /mnt/store:/store " in run
    for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_URL", "PREFECT_API_KEY"):
        assert f" -e {var} " in run, var  # passed through by name, value never on the command line
    assert " facegan:latest train --dataset " in run
    assert " --user $(id -u):$(id -g) " in run  # as the host user: files in the store are theirs
    assert "mkdir -p /mnt/data /mnt/store" in gpu  # made before docker would make them root's
    cpu = make_n("docker-train", "GPU=0")
    assert "--gpus" not in cpu and "--shm-size=8g" in cpu
    assert "docker build -t facegan:latest ." in make_n("docker-build")


def test_make_deploy_and_infra_commands():
    deploy = make_n("deploy", "FACEGAN_STORE=s3://my-bucket")
    assert "FACEGAN_STORE=s3://my-bucket" in deploy and "prefect --no-prompt deploy --all" in deploy
    infra = make_n("infra-deploy", "BUCKET=b1", "VPC_ID=vpc-1", "SUBNET_ID=subnet-1", "IMAGE_URI=repo/facegan:1")
    assert "aws cloudformation deploy --stack-name facegan --template-file infra/facegan.yaml" in infra
    assert "BucketName=b1" in infra and "CAPABILITY_NAMED_IAM" in infra and "UseSpot=true" in infra
    assert "Capacity=ecs" in infra and "ImageUri=repo/facegan:1" in infra
    assert "Capacity=one-box" in make_n("infra-deploy", "CAPACITY=one-box", "BUCKET=b1")
    pool = make_n("ecs-pool")
    assert "python infra/ecs_pool.py --stack facegan --pool facegan-ecs" in pool
    assert "aws cloudformation delete-stack --stack-name facegan" in make_n("infra-delete")
