"""The ECS work pool of the scale-to-zero stack: its base job template, and creating it.

    python infra/ecs_pool.py --stack facegan [--pool facegan-ecs]     # create/update the pool
    python infra/ecs_pool.py --stack facegan --print                  # only print the template

The template is prefect-aws's default ECS template (so it follows the pinned prefect-aws) with
these changes:

- four more job variables reach the task definition: `resource_requirements` (a GPU deployment
  sets `[{type: GPU, value: "1"}]`), `requires_compatibilities`, `task_network_mode` and
  `linux_parameters` (a bigger /dev/shm). Empty, they drop out of the task definition. (No name
  is one of the Docker pool's variables: prefect.yaml's deployments carry both pools' variables,
  and each worker uses only its own.)
- the defaults come from the stack's outputs: the cluster, the task and execution roles, the
  VPC, subnet and security group for Fargate tasks, the image, the store, CloudWatch logs.
- the container's memory limit is the task's memory.
- nothing else: which capacity a deployment runs on (the GPU capacity provider or Fargate) is in
  its job variables in prefect.yaml.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys

# job variables this template adds: name -> (schema, where it goes in the task definition)
EXTRA_VARIABLES = {
    "resource_requirements": ({"type": "array", "items": {"type": "object"}, "default": [],
                               "title": "Resource requirements",
                               "description": "The container's resourceRequirements, e.g. [{type: GPU, value: '1'}]"},
                              ("container", "resourceRequirements")),
    "linux_parameters": ({"type": "object", "default": {}, "title": "Linux parameters",
                          "description": "The container's linuxParameters, e.g. {sharedMemorySize: 8192}"},
                         ("container", "linuxParameters")),
    "requires_compatibilities": ({"type": "array", "items": {"type": "string"}, "default": [],
                                  "title": "Requires compatibilities",
                                  "description": "EC2 for the GPU capacity provider; empty: FARGATE"},
                                 ("task", "requiresCompatibilities")),
    "task_network_mode": ({"type": "string", "default": "awsvpc", "title": "Network mode",
                           "description": "awsvpc (Fargate), or bridge on the GPU instances"},
                          ("task", "networkMode")),
}


def default_template() -> dict:
    """prefect-aws's default ECS base job template."""
    from prefect_aws.workers.ecs_worker import ECSWorker

    return ECSWorker.get_default_base_job_template()


def base_job_template(outputs: dict[str, str], default: dict | None = None) -> dict:
    """The pool's base job template for a stack whose CloudFormation outputs are `outputs`
    (EcsCluster, TaskRoleArn, ExecutionRoleArn, VpcId, SubnetId, TaskSecurityGroup, ImageUri,
    StoreUri, LogGroup)."""
    t = copy.deepcopy(default or default_template())
    task = t["job_configuration"]["task_definition"]
    container = task["containerDefinitions"][0]
    props = t["variables"]["properties"]
    for name, (schema, (where, key)) in EXTRA_VARIABLES.items():
        props[name] = schema
        (container if where == "container" else task)[key] = "{{ " + name + " }}"
    # the container may use all of the task's memory (AWS takes the task's size alone too; moto,
    # which the tests run against, needs the container's)
    container["memory"] = "{{ memory }}"
    defaults = {
        "cluster": outputs["EcsCluster"],
        "task_role_arn": outputs["TaskRoleArn"],
        "execution_role_arn": outputs["ExecutionRoleArn"],
        "vpc_id": outputs["VpcId"],
        "network_configuration": {"subnets": [outputs["SubnetId"]], "securityGroups": [outputs["TaskSecurityGroup"]],
                                  "assignPublicIp": "ENABLED"},
        "image": outputs["ImageUri"],
        "env": {"FACEGAN_STORE": outputs["StoreUri"], "PYTHONUNBUFFERED": "1"},
        "configure_cloudwatch_logs": True,
        "cloudwatch_logs_options": {"awslogs-group": outputs["LogGroup"], "awslogs-create-group": "false"},
    }
    for name, value in defaults.items():
        props[name]["default"] = value
    return t


def stack_outputs(stack: str) -> dict[str, str]:
    """The CloudFormation outputs of `stack` (boto3, the usual AWS settings)."""
    import boto3

    described = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stack", default="facegan")
    p.add_argument("--pool", default="facegan-ecs")
    p.add_argument("--print", action="store_true", help="print the template, create nothing")
    a = p.parse_args(argv)
    template = base_job_template(stack_outputs(a.stack))
    if a.print:
        print(json.dumps(template, indent=2))
        return 0
    path = f"/tmp/{a.pool}-base-job-template.json"
    with open(path, "w") as f:
        json.dump(template, f)
    return subprocess.call(["prefect", "work-pool", "create", a.pool, "--type", "ecs", "--base-job-template", path,
                            "--overwrite"])


if __name__ == "__main__":
    sys.exit(main())
