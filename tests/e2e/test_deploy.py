"""deploy/ and the Dockerfile, checked offline.

No container engine or cluster here: the Kubernetes manifests are validated
against the Kubernetes schemas that the kubernetes-validate package ships
(strict: unknown fields are errors), and the manifests, the Compose file and
the Dockerfile are read and their cross-references checked: names, ports,
labels, selectors, the secret and the options the commands are given.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from taskmaster.cli import common, master, slave, status
from taskmaster.master import metrics
from tests.conftest import REPO

KUBERNETES_VERSION = "1.30.0"  # a version kubernetes-validate ships schemas for; manifests use only GA APIs
KUBERNETES = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
COMPOSE = REPO / "deploy" / "compose.yaml"
IMAGE_USER = 10001


@pytest.fixture(autouse=True)
def no_taskmaster_variables(monkeypatch):
    """The files' commands are parsed with their own environment only, not the test machine's."""
    for name in list(os.environ):
        if name.startswith(common.ENV_PREFIX):
            monkeypatch.delenv(name)


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[tuple[str, str], dict]:
    """(kind, name) -> resource, over every manifest."""
    out = {}
    for path in MANIFESTS:
        for doc in documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            out[key] = doc
    return out


def env_of(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def parse_command(container_args: list[str], env: dict[str, str]):
    """Parse a container's command as the command itself would, with its environment: its options."""
    builders = {"tm-master": master.build_parser, "tm-slave": slave.build_parser, "tm-status": status.build_parser}
    parser = builders[container_args[0]](container_args[0])
    values = common.environment_values(parser, env)
    args = parser.parse_intermixed_args(container_args[1:])
    for dest, value in values.items():
        flag = "--" + dest.replace("_", "-")
        if flag not in container_args:
            setattr(args, dest, value)
    return args


# ------------------------------------------------------------- Kubernetes


def test_the_manifests_are_there():
    names = {path.name for path in MANIFESTS}
    assert {"master.yaml", "slaves-job.yaml", "slaves-deployment.yaml"} <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_validates_against_the_kubernetes_schemas(path):
    docs = documents(path)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")


def test_the_validator_catches_a_broken_manifest():
    """The check above can fail: a misspelt field and a wrong type are both refused."""
    statefulset = resources()[("StatefulSet", "taskmaster-master")]
    broken = yaml.safe_load(yaml.safe_dump(statefulset))
    broken["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(statefulset))
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def master_parts():
    all_resources = resources()
    service = all_resources[("Service", "taskmaster-master")]
    statefulset = all_resources[("StatefulSet", "taskmaster-master")]
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return service, statefulset, pod, container


def slave_workloads():
    all_resources = resources()
    return [all_resources[("Job", "taskmaster-slaves")], all_resources[("Deployment", "taskmaster-slaves")]]


def test_the_master_is_one_stateful_pod_behind_its_service():
    service, statefulset, pod, container = master_parts()
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    selector = statefulset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # The Service's port leads to the container port the master binds.
    (port,) = service["spec"]["ports"]
    (container_port,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    args = parse_command(container["args"], env_of(container))
    assert args.address == f"tcp://*:{container_port['containerPort']}"
    # No slave pod matches the master's Service.
    for workload in slave_workloads():
        slave_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert not service["spec"]["selector"].items() <= slave_labels.items()


def test_prometheus_scrapes_the_port_the_master_serves_metrics_on():
    _, statefulset, _, container = master_parts()
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    args = parse_command(container["args"], env_of(container))
    host, port = metrics.parse_address(args.metrics_address)
    assert host == "0.0.0.0", "metrics bound to loopback cannot be scraped from another pod"
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] == metrics.METRICS_PATH
    assert port in [p["containerPort"] for p in container["ports"]]


def test_the_master_binds_beyond_loopback_only_with_the_secret():
    _, _, pod, container = master_parts()
    args = parse_command(container["args"], env_of(container))
    assert not args.address.startswith("tcp://127.")
    assert args.secret_file, "a master reachable from other pods needs --secret-file"
    assert_secret_mounted(pod, container, args.secret_file)


def test_the_state_and_failures_files_live_on_the_persistent_volume():
    _, statefulset, _, container = master_parts()
    args = parse_command(container["args"], env_of(container))
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    state_dir = mounts[claim["metadata"]["name"]]
    for path in (args.state_file, args.failures_file, args.result_file):
        assert path and path.startswith(state_dir + "/"), path
    assert container["workingDir"] == state_dir
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_readiness_probe_asks_the_master_with_tm_status():
    _, _, _, container = master_parts()
    command = container["readinessProbe"]["exec"]["command"]
    assert command[0] == "tm-status"
    # The probe runs in the container's environment: TASKMASTER_ADDRESS there is
    # the bind address (tcp://*:...), which cannot be connected to - the
    # probe's own --address must win, and the secret must come along.
    probe = parse_command(command, env_of(container))
    master_args = parse_command(container["args"], env_of(container))
    assert probe.address == master_args.address.replace("*", "127.0.0.1")
    assert probe.secret_file == master_args.secret_file
    assert container["readinessProbe"]["timeoutSeconds"] * 1000 > probe.timeout


def test_termination_grace_outlasts_the_commands_grace():
    _, _, pod, container = master_parts()
    assert pod["terminationGracePeriodSeconds"] > parse_command(container["args"], env_of(container)).grace
    for workload in slave_workloads():
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["terminationGracePeriodSeconds"] > parse_command(container["args"], env_of(container)).grace


def test_slaves_point_at_the_masters_service_with_the_same_secret():
    service, _, master_pod, master_container = master_parts()
    master_args = parse_command(master_container["args"], env_of(master_container))
    (port,) = service["spec"]["ports"]
    for workload in slave_workloads():
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == master_container["image"]
        args = parse_command(container["args"], env_of(container))
        host, _, service_port = args.address[len("tcp://") :].rpartition(":")
        assert host.split(".")[0] == service["metadata"]["name"], args.address
        assert int(service_port) == port["port"]
        assert args.wait_for_master is not None, "slaves on an engine must wait for their master"
        assert args.secret_file == master_args.secret_file
        assert_secret_mounted(pod, container, args.secret_file)
        assert secret_source(pod, container, args.secret_file) == secret_source(
            master_pod, master_container, master_args.secret_file
        )


def test_the_slave_job_is_a_work_queue_and_the_deployment_a_fleet():
    job, deployment = slave_workloads()
    assert job["spec"]["parallelism"] >= 1
    assert "completions" not in job["spec"], "the work-queue pattern leaves completions unset"
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
    assert deployment["spec"]["replicas"] >= 1
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (fleet,) = deployment["spec"]["template"]["spec"]["containers"]
    assert parse_command(fleet["args"], env_of(fleet)).wait_for_master == 0  # waits for the next master for ever


def test_every_container_has_requests_and_limits_and_runs_as_the_images_user():
    workloads = [master_parts()[1], *slave_workloads()]
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == IMAGE_USER
        for container in pod["containers"]:
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][kind].keys(), (workload["kind"], kind)


def test_every_pod_is_hardened():
    """No service-account token, the runtime's seccomp profile, a read-only root, no privilege to gain."""
    for workload in [master_parts()[1], *slave_workloads()]:
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name  # taskmaster never talks to the API server
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"] and "add" not in context["capabilities"], name
            # With a read-only root, /tmp (Python's tempfile, a job's scratch files) is a volume of its own.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def network_policy() -> dict:
    return resources()[("NetworkPolicy", "taskmaster-master")]


def rule_ports(rule: dict, container: dict) -> set[int]:
    """The container ports a NetworkPolicy rule opens (its ports may be named)."""
    by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
    return {by_name.get(p["port"], p["port"]) for p in rule["ports"]}


def test_only_slaves_reach_the_masters_port_and_only_monitoring_its_metrics():
    _, statefulset, _, container = master_parts()
    policy = network_policy()["spec"]
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items(), "the policy covers the master pod"
    assert policy["policyTypes"] == ["Ingress"]  # selected: every ingress not allowed below is denied
    args = parse_command(container["args"], env_of(container))
    zmq_port = int(args.address.rpartition(":")[2])
    _, metrics_port = metrics.parse_address(args.metrics_address)
    rules = policy["ingress"]
    assert len(rules) == 2 and all(rule.get("from") and rule.get("ports") for rule in rules), rules
    (zmq_rule,) = [rule for rule in rules if rule_ports(rule, container) == {zmq_port}]
    (metrics_rule,) = [rule for rule in rules if rule_ports(rule, container) == {metrics_port}]
    # The master's port: the slaves' pods, in the master's namespace, and nothing else.
    (peer,) = zmq_rule["from"]
    assert set(peer) == {"podSelector"}
    for workload in slave_workloads():
        slave_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert peer["podSelector"]["matchLabels"].items() <= slave_labels.items()
    assert not peer["podSelector"]["matchLabels"].items() <= pod_labels.items(), "not the master itself"
    # /metrics: the monitoring namespace only (its automatic name label).
    (peer,) = metrics_rule["from"]
    assert set(peer) == {"namespaceSelector"}
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}


def secret_source(pod: dict, container: dict, path: str) -> tuple[str, str]:
    """(Secret name, key) of the secret file at `path` in the container."""
    for mount in container["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            secret = volume["secret"]
            (item,) = [i for i in secret["items"] if i["path"] == path[len(prefix) :]]
            return secret["secretName"], item["key"]
    raise AssertionError(f"no volume mounted at {path}")


def assert_secret_mounted(pod: dict, container: dict, path: str) -> None:
    name, key = secret_source(pod, container, path)
    mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"])]
    assert all(m.get("readOnly") for m in mounts)
    # The docs tell how to create exactly this Secret.
    page = (REPO / "docs" / "deploy" / "kubernetes.rst").read_text()
    assert f"kubectl create secret generic {name} --from-file={key}=" in page


# ----------------------------------------------------------------- Compose


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_args(service: dict):
    return parse_command(service["command"], {k: str(v) for k, v in service["environment"].items()})


def test_compose_has_a_master_and_replicated_slaves():
    doc = compose()
    services = doc["services"]
    assert set(services) == {"master", "slave"}
    assert services["slave"]["deploy"]["replicas"] >= 2
    assert "replicas" not in services["master"].get("deploy", {}), "one master"
    assert services["master"]["command"][0] == "tm-master"
    assert services["slave"]["command"][0] == "tm-slave"
    assert services["slave"]["image"] == services["master"]["image"]


def test_compose_slaves_reach_the_master_by_service_name_and_port():
    services = compose()["services"]
    master_args = compose_args(services["master"])
    slave_args = compose_args(services["slave"])
    port = master_args.address.rpartition(":")[2]
    assert master_args.address == f"tcp://*:{port}"
    assert slave_args.address == f"tcp://master:{port}"
    assert port in [str(p) for p in services["master"]["expose"]]
    assert "ports" not in services["master"], "the master's port stays on the Compose network"
    assert slave_args.wait_for_master is not None
    probe = parse_command(services["master"]["healthcheck"]["test"][1:], services["master"]["environment"])
    assert probe.address == f"tcp://127.0.0.1:{port}"


def test_compose_state_is_on_a_volume_and_the_secret_is_a_compose_secret():
    doc = compose()
    services = doc["services"]
    master_args = compose_args(services["master"])
    (mount,) = services["master"]["volumes"]
    volume, _, directory = mount.partition(":")
    assert volume in doc["volumes"]
    for path in (master_args.state_file, master_args.failures_file, master_args.result_file):
        assert path.startswith(directory + "/"), path
    for name in ("master", "slave"):
        args = compose_args(services[name])
        (secret,) = services[name]["secrets"]
        assert secret in doc["secrets"]
        assert args.secret_file == f"/run/secrets/{secret}"  # where Compose mounts a secret
        grace = args.grace
        assert float(services[name]["stop_grace_period"].rstrip("s")) > grace
    assert doc["secrets"][secret]["file"].endswith(".secret")  # kept out of git by .gitignore


def test_compose_services_are_hardened():
    """Read-only root (the state volume and a /tmp tmpfs writable), no capabilities, no privilege to gain."""
    services = compose()["services"]
    for name, service in services.items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"] and "cap_add" not in service, name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "/tmp" in service["tmpfs"], name


def test_compose_never_restarts_a_master_whose_run_ended():
    """Issue 25, item 7: ``restart: on-failure`` restarted a master whose run ended with failed jobs (exit 1).

    The new one said "this run already finished, but N failed" and exited 1,
    and so on for ever.  Compose cannot restart on some exit codes only, so
    the master is not restarted, and the docs say how to resume it.
    """
    master = compose()["services"]["master"]
    assert master.get("restart", "no") == "no"
    section = (REPO / "docs" / "deploy" / "compose.rst").read_text()
    assert "the master is restarted on failure" not in section
    assert "docker compose -f deploy/compose.yaml up -d master" in section


# ---------------------------------------------------------- Dockerfile


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (keyword, rest), continuation lines joined, split by FROM."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest.strip()))
    return stages


def base_images() -> list[str]:
    """Each stage's base image, with the global ARGs' defaults put in."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    args: dict[str, str] = {}
    images = []
    for line in text.splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "ARG" and not images and "=" in rest:
            name, _, value = rest.strip().partition("=")
            args[name] = value.strip().strip('"')
        elif keyword.upper() == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return images


def test_the_base_image_is_pinned():
    """An exact Python release on a named Debian suite (or a digest): a rebuild does not move to another image."""
    images = base_images()
    assert len(images) == 2 and len(set(images)) == 1, images  # build and run on the very same base
    (image,) = set(images)
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image
    if "@sha256:" not in image:
        # The docs say why there is no digest, and how to add one.
        page = (REPO / "docs" / "deploy" / "container.rst").read_text()
        assert image.split("@")[0] in page and "imagetools inspect" in page


def test_the_image_is_a_slim_python_running_as_a_non_root_user():
    stages = dockerfile_stages()
    final = stages[-1]
    assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base_images()[-1])
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user == str(IMAGE_USER)  # what the Kubernetes manifests' runAsUser says
    assert any(f"--uid {IMAGE_USER}" in rest for keyword, rest in final if keyword == "RUN")


def test_the_image_installs_a_wheel_built_from_the_checkout():
    build, final = dockerfile_stages()[0], dockerfile_stages()[-1]
    assert ("COPY", ". .") in build
    assert any(rest.startswith("pip wheel") and rest.endswith(" .") for keyword, rest in build if keyword == "RUN")
    installs = [rest for keyword, rest in final if keyword == "RUN" and "pip install" in rest]
    assert installs and all(".whl" in rest for rest in installs), installs
    assert any(keyword == "COPY" and rest.startswith("--from=") for keyword, rest in final)
    # The commands are console scripts of the installed package: on the PATH.
    (cmd,) = [rest for keyword, rest in final if keyword == "CMD"]
    assert cmd.startswith('["tm-')


def test_no_secret_goes_into_the_image():
    for stage in dockerfile_stages():
        for keyword, rest in stage:
            if keyword in ("COPY", "ADD", "ENV", "ARG"):
                assert "secret" not in rest.lower(), (keyword, rest)
    ignored = dockerignore()
    for path in ("taskmaster.secret", "deploy/taskmaster.secret", "home/.taskmaster-secret", "munge.key"):
        assert excluded(path, ignored), path


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def excluded(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context (patterns without '!')."""
    parts = path.split("/")
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        bare = pattern[3:] if pattern.startswith("**/") else None
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if bare is not None and fnmatch.fnmatchcase(parts[depth - 1], bare):
                return True
    return False


def test_dockerignore_leaves_out_environments_history_and_run_files_but_not_the_package():
    patterns = dockerignore()
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".tox/py311/bin/python",
        "taskmaster-example-0123abcd.state",
        "sub/run.state",
        "run.state.tmp-1234",
        "run.failures.jsonl",
        "taskmaster/__pycache__/slave.cpython-311.pyc",
        "taskmaster-run/master.address",
        "dist/taskmaster-1.0.0-py3-none-any.whl",
    ):
        assert excluded(path, patterns), path
    # What the wheel is built from stays in.
    package = [p for p in (REPO / "taskmaster").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    kept = ["setup.py", "pyproject.toml", "README.rst"] + [str(p.relative_to(REPO)) for p in package]
    for path in kept:
        assert not excluded(path, patterns), path
    assert not any(p.startswith("!") for p in patterns)


def test_the_package_metadata_reads_only_what_the_image_build_keeps():
    text = (REPO / "pyproject.toml").read_text() + (REPO / "setup.py").read_text()
    named = re.findall(r"file\s*=\s*\"([^\"]+)\"", text) + re.findall(r"open\(\"([^\"]+)\"", text)
    assert "README.rst" in named  # the long description
    for name in named:
        assert (REPO / name).exists() and not excluded(name, dockerignore()), name


def test_the_commands_the_deploy_files_run_parse():
    """Every tm-* command line in the manifests and the Compose file is one the commands accept."""
    lines = []
    for path in [*MANIFESTS, COMPOSE]:
        text = path.read_text()
        lines += re.findall(r"\[\"(tm-[a-z]+)\",([^\]]*)\]", text)
    assert len(lines) >= 5
    for command, rest in lines:
        argv = shlex.split(rest.replace(",", " "))
        parse_command([command, *argv], {})
