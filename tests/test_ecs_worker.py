"""The scale-to-zero worker side for real: a Prefect server, the ECS work pool made from
infra/ecs_pool.py's base job template, the real prefect.yaml deployed onto it, and the real
prefect-aws ECS worker submitting the runs to moto's ECS over HTTP.

moto models ECS clusters, capacity providers, task definitions and tasks, but it does not scale
an Auto Scaling group: the instances the GPU capacity provider would start are registered by
hand here (one container instance per GPU task), so that moto places the tasks on that provider. What AWS does
after the task is placed (starting the GPU instance, scaling back to 0) is AWS's engine, set up
by infra/facegan.yaml and checked from the template in tests/test_infra.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/facegan:test"
GPU_PROVIDER = "facegan-gpu"
GPU_FLOWS = {"train-dcgan/train-dcgan", "train-cyclegan/train-cyclegan", "evaluate/evaluate"}
CPU_FLOWS = {"nightly-gallery/nightly-gallery", "prepare-celeba/prepare-celeba"}
DOCKER_POOL, ECS_POOL = POOLS = ("gpu-docker", "facegan-ecs")


def ecs_pool_module():
    spec = importlib.util.spec_from_file_location("ecs_pool", ROOT / "infra" / "ecs_pool.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def aws(moto_endpoint, bucket):
    """An ECS cluster on moto's server like the stack's: Fargate and a GPU capacity provider
    over an Auto Scaling group from 0, roles, a subnet and security group, a log group; returns
    the stack outputs infra/ecs_pool.py reads, and the clients."""
    def client(name):
        return boto3.client(name, endpoint_url=moto_endpoint)

    ec2, ecs, iam, logs = client("ec2"), client("ecs"), client("iam"), client("logs")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    sg = ec2.create_security_group(GroupName="facegan-tasks", Description="no ingress", VpcId=vpc)["GroupId"]
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                        "Principal": {"Service": "ecs-tasks.amazonaws.com"}}]})
    roles = {n: iam.create_role(RoleName=n, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
             for n in ("facegan-task", "facegan-execution")}
    cluster = ecs.create_cluster(clusterName="facegan")["cluster"]["clusterArn"]
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = ec2.create_launch_template(LaunchTemplateName="facegan-gpu", LaunchTemplateData={
        "ImageId": ami, "InstanceType": "g5.xlarge"})["LaunchTemplate"]["LaunchTemplateId"]
    autoscaling = client("autoscaling")
    autoscaling.create_auto_scaling_group(AutoScalingGroupName="facegan-gpu", MinSize=0, MaxSize=1,
                                          LaunchTemplate={"LaunchTemplateId": template}, VPCZoneIdentifier=subnet)
    group_arn = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=["facegan-gpu"])["AutoScalingGroups"][0]["AutoScalingGroupARN"]
    ecs.create_capacity_provider(name=GPU_PROVIDER, autoScalingGroupProvider={
        "autoScalingGroupArn": group_arn, "managedTerminationProtection": "ENABLED",
        "managedScaling": {"status": "ENABLED", "targetCapacity": 100}})
    ecs.put_cluster_capacity_providers(cluster="facegan", capacityProviders=["FARGATE", "FARGATE_SPOT", GPU_PROVIDER],
                                       defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])
    # what managed scaling would start for the waiting GPU tasks: a g5.xlarge for each
    from moto.ec2 import utils as ec2_utils

    for instance in boto3.resource("ec2", endpoint_url=moto_endpoint).create_instances(
            ImageId=ami, MinCount=len(GPU_FLOWS), MaxCount=len(GPU_FLOWS), InstanceType="g5.xlarge"):
        ecs.register_container_instance(cluster="facegan", instanceIdentityDocument=json.dumps(
            ec2_utils.generate_instance_identity_document(instance)))
    logs.create_log_group(logGroupName="facegan-jobs")
    outputs = {"EcsCluster": "facegan", "TaskRoleArn": roles["facegan-task"],
               "ExecutionRoleArn": roles["facegan-execution"], "VpcId": vpc, "SubnetId": subnet,
               "TaskSecurityGroup": sg, "ImageUri": IMAGE, "StoreUri": bucket, "LogGroup": "facegan-jobs"}
    return {"outputs": outputs, "ecs": ecs, "cluster": cluster}


@pytest.fixture
def ecs_server(server):
    """The session's Prefect server, left as this test found it: the runs submitted here stay
    Pending (nothing runs them in moto) and would hold the deployments' concurrency slots, so the
    runs, deployments (with their slots) and pools made here are deleted afterwards."""
    yield server
    pools = {"work_pools": {"name": {"any_": list(POOLS)}}}
    for run in server.api("POST", "/flow_runs/filter", pools):
        server.api("DELETE", f"/flow_runs/{run['id']}")
    for dep in server.api("POST", "/deployments/filter", pools):
        server.api("DELETE", f"/deployments/{dep['id']}")
    for pool in POOLS:
        server.api("DELETE", f"/work_pools/{pool}")


def test_ecs_worker_puts_gpu_flows_on_the_gpu_provider_and_the_rest_on_fargate(ecs_server, aws, bucket, tmp_path):
    server = ecs_server
    outputs, ecs = aws["outputs"], aws["ecs"]
    template = ecs_pool_module().base_job_template(outputs)
    (tmp_path / "template.json").write_text(json.dumps(template))
    aws_env = {k: v for k, v in __import__("os").environ.items() if k.startswith("AWS_")}
    env = {**aws_env, "AWS_ENDPOINT_URL": aws_env["AWS_ENDPOINT_URL_S3"], "FACEGAN_STORE": bucket,
           "FACEGAN_IMAGE": IMAGE, "FACEGAN_TZ": "UTC", "FACEGAN_GPU_CAPACITY_PROVIDER": GPU_PROVIDER}

    # the same prefect.yaml also deploys onto a Docker pool (the one-box setup): the server takes
    # the ECS variables there, the Docker worker has no use for them
    server.cli("work-pool", "create", DOCKER_POOL, "--type", "docker", "--overwrite", env=env)
    server.cli("--no-prompt", "deploy", "--all", env={**env, "FACEGAN_POOL": DOCKER_POOL}, cwd=ROOT)
    docker_dep = server.api("GET", "/deployments/name/train-dcgan/train-dcgan")
    assert docker_dep["work_pool_name"] == DOCKER_POOL
    assert docker_dep["job_variables"]["container_create_kwargs"]["device_requests"][0]["driver"] == "nvidia"

    server.cli("work-pool", "create", ECS_POOL, "--type", "ecs", "--base-job-template",
               str(tmp_path / "template.json"), "--overwrite", env=env)
    server.cli("--no-prompt", "deploy", "--all", env={**env, "FACEGAN_POOL": ECS_POOL}, cwd=ROOT)
    run_ids = {}
    for name in sorted(GPU_FLOWS | CPU_FLOWS):
        dep = server.api("GET", f"/deployments/name/{name}")
        assert dep["work_pool_name"] == ECS_POOL, name
        params = {"checkpoint_uri": f"{bucket}/runs/x"} if name == "evaluate/evaluate" else {}
        override = {}
        if name in GPU_FLOWS:  # the deployment asks for 14 GiB of a g5.xlarge; moto's instance has 7482 MiB
            assert dep["job_variables"]["memory"] == 14336
            override = {"memory": 6144}
        run_ids[server.run_deployment(name, params, override)] = name
    worker_log = server.cli("worker", "start", "--pool", ECS_POOL, "--type", "ecs", "--run-once", env=env,
                            timeout=600)

    arns = ecs.list_tasks(cluster="facegan")["taskArns"]
    assert arns, worker_log
    tasks = ecs.describe_tasks(cluster="facegan", tasks=arns)["tasks"]
    by_flow = {}
    for task in tasks:
        override = task["overrides"]["containerOverrides"][0]
        envs = {e["name"]: e["value"] for e in override["environment"]}
        by_flow[run_ids[envs["PREFECT__FLOW_RUN_ID"]]] = (task, envs)
    assert set(by_flow) == GPU_FLOWS | CPU_FLOWS, worker_log  # every run became one ECS task
    for name, (task, envs) in by_flow.items():
        definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
        container = definition["containerDefinitions"][0]
        assert container["image"] == IMAGE and envs["FACEGAN_STORE"] == bucket, name
        assert task["overrides"]["taskRoleArn"] == outputs["TaskRoleArn"], name
        assert definition["executionRoleArn"] == outputs["ExecutionRoleArn"], name
        if name in GPU_FLOWS:  # one GPU, on the capacity provider that scales from 0
            assert task["capacityProviderName"] == GPU_PROVIDER, name
            assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}], name
            assert definition["requiresCompatibilities"] == ["EC2"] and definition["networkMode"] == "bridge"
            assert container["linuxParameters"]["sharedMemorySize"] == 8192
        else:  # Fargate: no GPU, no instance
            assert task["launchType"] == "FARGATE" and "capacityProviderName" not in task, name
            assert "resourceRequirements" not in container, name
            assert "FARGATE" in definition["requiresCompatibilities"] and definition["networkMode"] == "awsvpc"
            assert (definition["cpu"], definition["memory"]) == ("2048", "8192")
