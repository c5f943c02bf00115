"""The deploy artifacts that run the gateway: the container image, Docker Compose, the systemd
unit, the Kubernetes manifests, and the Telegraf example that writes to it.

Each must run the gateway as an unprivileged user (SPEC 10), with a config the gateway accepts,
on the port its health checks use. No container engine or cluster runs here, so the Dockerfile,
Compose and Kubernetes files are checked as data against the gateway's own config loader and
command line; the systemd unit is checked by systemd itself (`systemd-analyze verify` and
`systemd-analyze security --offline`, from Debian's `systemd`, which `.ci/run` installs).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main as cli_main
from gateway.cli.common import EXIT_USAGE
from gateway.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "systemd" / "influx-gateway.service"
SYSUSERS = DEPLOY / "systemd" / "influx-gateway.sysusers"
KUBERNETES = DEPLOY / "kubernetes" / "influx-gateway.yaml"
TELEGRAF = DEPLOY / "telegraf" / "telegraf.conf"
HOST_CONFIG = DEPLOY / "influx-gateway.toml"
NEEDS_SYSTEMD = (
    "not found: install Debian's `systemd` package (run .ci/run, which installs it, or "
    "`apt-get install systemd`)"
)
MAX_EXPOSURE = 20  # systemd-analyze security, tenths: 0 (locked down) to 100 (10.0, exposed)


def load_toml_text(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> Config:
    """A config given as text (embedded in a manifest), loaded as the gateway loads files."""
    path = tmp_path / "embedded.toml"
    path.write_text(text)
    return load_config(path, env=env or {})


def listen_port(config: Config) -> int:
    return int(config.server.listen.rpartition(":")[2])


# -- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile: comments dropped, continuations joined."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    out = []
    for line in logical:
        instruction, _, args = line.strip().partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the image's last stage (the one that runs)."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def exec_form(args: str) -> list[str]:
    parsed = json.loads(args)
    assert isinstance(parsed, list), f"not the exec (JSON) form: {args}"
    return [str(part) for part in parsed]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    """The ENV values set in a stage."""
    values: dict[str, str] = {}
    for name, args in stage:
        if name == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                values[key] = value
    return values


def test_the_image_runs_as_an_unprivileged_user() -> None:
    """The last USER of the final stage is a numeric non-root uid:gid, created there."""
    stage = final_stage()
    users = [args for name, args in stage if name == "USER"]
    assert users, "the final stage has no USER: the gateway would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]
    assert gid.isdigit() and int(gid) > 0, users[-1]
    runs = " ".join(args for name, args in stage if name == "RUN")
    assert f"--uid {uid}" in runs
    assert f"--gid {gid}" in runs


def in_build_context(relative: str) -> bool:
    """Whether `docker build .` sends this repository path: .dockerignore's rules in order, the
    last match deciding (`*` and `**` as Docker reads them)."""
    included = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pattern = line.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(f"{regex}(/.*)?", relative):
            included = line.startswith("!")
    return included


def test_the_image_copies_only_what_exists_and_is_in_its_build_context() -> None:
    """Every COPY from the build context names a file of the repository that .dockerignore
    lets through (the context is the repository's root)."""
    sources = [
        source
        for name, args in dockerfile_instructions()
        if name == "COPY" and "--from=" not in args
        for source in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert in_build_context(source), (
            f"{source} is excluded from the build context by .dockerignore"
        )


def build_context(destination: Path) -> Path:
    """The files `docker build .` sends, copied to `destination`."""
    for path in sorted(REPO.rglob("*")):
        relative = path.relative_to(REPO).as_posix()
        if not path.is_file() or relative.startswith((".git/", ".venv/")):
            continue
        if in_build_context(relative):
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination / relative)
    return destination


@pytest.mark.slow
def test_the_build_context_builds_the_package_with_its_accelerator(tmp_path: Path) -> None:
    """What the image's build stage installs builds from its build context alone (as pip does
    there, in an isolated build), with the C accelerator compiled and the console script."""
    context = build_context(tmp_path / "context")
    assert (context / "deploy" / "influx-gateway.toml").is_file()
    assert not list(context.rglob("*.so")) and not list(context.rglob("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "out"), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 0 == result.returncode, result.stderr[-3000:]
    (wheel,) = (tmp_path / "out").glob("influx_gateway-*.whl")
    with zipfile.ZipFile(wheel) as built:
        names = built.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        console = built.read(entry_points).decode()
    assert any(re.fullmatch(r"gateway/lineprotocol/_speedups\..*\.so", n) for n in names)
    assert "influx-gateway = gateway.cli:main" in console


def test_the_image_starts_the_gateway_on_the_config_it_ships() -> None:
    """ENTRYPOINT is the console script, CMD a subcommand it has, and $INFLUX_GATEWAY_CONFIG
    the file COPY put in the image."""
    stage = final_stage()
    entrypoint = exec_form(next(args for name, args in stage if name == "ENTRYPOINT"))
    command = exec_form(next(args for name, args in stage if name == "CMD"))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert ["influx-gateway"] == entrypoint
    assert "influx-gateway" in scripts
    assert command[0] in cli_main.commands
    copies = {
        args.split()[-1]: args.split()[-2]
        for name, args in stage
        if name == "COPY" and "--from=" not in args
    }
    config_path = env_of(stage)["INFLUX_GATEWAY_CONFIG"]
    assert "deploy/influx-gateway.toml" == copies[config_path]


def test_the_image_exposes_checks_and_keeps_what_its_config_says() -> None:
    """EXPOSE is the config's port, the volume its data_dir, and the health check asks that
    port's /ready."""
    stage = final_stage()
    config = load_config(HOST_CONFIG, env={})
    exposed = [args for name, args in stage if name == "EXPOSE"]
    volumes = [exec_form(args) for name, args in stage if name == "VOLUME"]
    health = next(args for name, args in stage if name == "HEALTHCHECK")
    assert [str(listen_port(config))] == exposed
    assert [[config.data_dir]] == volumes
    assert f"http://127.0.0.1:{listen_port(config)}/ready" in health
    assert config.server.listen.startswith("0.0.0.0:")  # reachable from outside the container


# -- Docker Compose -----------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return parsed


def test_compose_runs_the_gateway_unprivileged_and_read_only() -> None:
    """The gateway service runs as a non-root uid, on a read-only root, without capabilities."""
    gateway = compose()["services"]["gateway"]
    uid = gateway["user"].partition(":")[0]
    assert uid.isdigit() and int(uid) > 0
    assert gateway["read_only"] is True
    assert ["ALL"] == gateway["cap_drop"]
    assert "no-new-privileges:true" in gateway["security_opt"]
    assert "deploy/Dockerfile" == gateway["build"]["dockerfile"]
    assert (COMPOSE.parent / gateway["build"]["context"] / "deploy" / "Dockerfile").is_file()


def test_compose_config_forwards_to_its_influxdb_service(tmp_path: Path) -> None:
    """The embedded config loads, is the one $INFLUX_GATEWAY_CONFIG names, listens on the
    published port, keeps its data on the volume, and forwards to the influxdb service."""
    spec = compose()
    gateway = spec["services"]["gateway"]
    (mounted,) = gateway["configs"]
    config = load_toml_text(spec["configs"][mounted["source"]]["content"], tmp_path)
    assert mounted["target"] == gateway["environment"]["INFLUX_GATEWAY_CONFIG"]
    assert [f"{listen_port(config)}:{listen_port(config)}"] == gateway["ports"]
    assert any(v.endswith(f":{config.data_dir}") for v in gateway["volumes"])
    (upstream,) = config.upstreams
    assert "v1" == upstream.api
    assert upstream.url.startswith("http://influxdb:")
    assert "influxdb" in spec["services"]


# -- systemd ------------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    """Every key=value of the unit file, values in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail(f"systemd-analyze {NEEDS_SYSTEMD}")
    return found


def unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's console script (systemd checks that
    the program exists), everything else as shipped."""
    script = Path(sys.executable).parent / "influx-gateway"
    assert script.is_file(), f"{script}: install the project (pip install -e .)"
    text = UNIT.read_text().replace("/opt/influx-gateway/bin/influx-gateway", str(script))
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    return unit


def test_systemd_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    """`systemd-analyze verify` passes and says nothing (an unknown key is only a warning)."""
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit_here(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert 0 == result.returncode, result.stderr
    assert "" == result.stderr.strip()


def test_systemd_rates_the_unit_locked_down(tmp_path: Path) -> None:
    """`systemd-analyze security` rates the sandbox at most 2.0 of 10 ("OK")."""
    result = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=true",
            f"--threshold={MAX_EXPOSURE}",
            str(unit_here(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert 0 == result.returncode, result.stdout[-2000:]


def test_the_unit_runs_as_the_system_user_it_declares() -> None:
    """User= is a non-root user that the sysusers.d file creates, with the state directory as
    its home and no privilege to gain."""
    settings = unit_settings()
    (user,) = settings["User"]
    assert user not in ("root", "0")
    assert "DynamicUser" not in settings
    declared = [line.split() for line in SYSUSERS.read_text().splitlines() if line[:2] == "u "]
    assert [["u", user]] == [fields[:2] for fields in declared]
    assert f"/var/lib/{settings['StateDirectory'][0]}" in declared[0]
    assert ["yes"] == settings["NoNewPrivileges"]
    assert [""] == settings["CapabilityBoundingSet"]


def test_the_unit_runs_the_shipped_config_and_stops_and_reloads_it_as_the_gateway_expects() -> None:
    """The config named in the environment loads and keeps its data in the StateDirectory;
    stop waits longer than the gateway's drain; reload is SIGHUP; exit 2 is not restarted."""
    settings = unit_settings()
    environment = dict(v.split("=", 1) for v in settings["Environment"])
    config = load_config(HOST_CONFIG, env={})
    assert (
        f"/etc/{settings['ConfigurationDirectory'][0]}/{HOST_CONFIG.name}"
        == (environment["INFLUX_GATEWAY_CONFIG"])
    )
    assert f"/var/lib/{settings['StateDirectory'][0]}" == config.data_dir
    assert float(settings["TimeoutStopSec"][0]) > config.server.shutdown_timeout
    assert ["/bin/kill -HUP $MAINPID"] == settings["ExecReload"]
    assert [str(EXIT_USAGE)] == settings["RestartPreventExitStatus"]
    assert ["/opt/influx-gateway/bin/influx-gateway run"] == settings["ExecStart"]


# -- Kubernetes ---------------------------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    """The Kubernetes objects by kind (one of each)."""
    objects = [doc for doc in yaml.safe_load_all(KUBERNETES.read_text()) if doc]
    by_kind = {obj["kind"]: obj for obj in objects}
    assert len(by_kind) == len(objects), "one object of each kind expected"
    return by_kind


def gateway_container() -> dict[str, Any]:
    (container,) = manifests()["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def kubernetes_config(tmp_path: Path) -> Config:
    """The ConfigMap's config, loaded with a value for each variable the pod's environment
    takes from a Secret."""
    env = {
        e["name"]: "from-a-secret"
        for e in gateway_container()["env"]
        if "secretKeyRef" in e["valueFrom"]
    }
    text = manifests()["ConfigMap"]["data"]["influx-gateway.toml"]
    return load_toml_text(text, tmp_path, env=env)


def test_kubernetes_pod_runs_unprivileged_on_a_read_only_root() -> None:
    """Non-root uid/gid, no privilege escalation, no capabilities, read-only root, seccomp."""
    pod = manifests()["StatefulSet"]["spec"]["template"]["spec"]
    container = gateway_container()["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["runAsGroup"] > 0
    assert "RuntimeDefault" == pod["securityContext"]["seccompProfile"]["type"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert ["ALL"] == container["capabilities"]["drop"]


def test_kubernetes_config_loads_and_every_path_it_names_is_mounted(tmp_path: Path) -> None:
    """The ConfigMap's config loads (with the upstream token the pod's environment provides),
    is the file the container is started with, and its data dir and policy file are mounted:
    the data on the persistent volume, the policy from its Secret."""
    objects = manifests()
    container = gateway_container()
    config = kubernetes_config(tmp_path)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in objects["StatefulSet"]["spec"]["template"]["spec"]["volumes"]}
    claims = [c["metadata"]["name"] for c in objects["StatefulSet"]["spec"]["volumeClaimTemplates"]]
    config_arg = container["args"][container["args"].index("-c") + 1]
    assert "influx-gateway.toml" == mounts[config_arg]["subPath"]
    assert "influx-gateway-config" == volumes[mounts[config_arg]["name"]]["configMap"]["name"]
    assert mounts[config.data_dir]["name"] in claims
    policy_dir = str(config.policy_path.parent)
    assert "secret" in volumes[mounts[policy_dir]["name"]]
    assert mounts[policy_dir]["readOnly"] is True
    assert container["args"][0] in cli_main.commands


def test_kubernetes_probes_and_service_use_the_gateway_port(tmp_path: Path) -> None:
    """The container port is the config's, readiness is /ready and liveness /ping on it, and
    the Service sends to it."""
    objects = manifests()
    container = gateway_container()
    config = kubernetes_config(tmp_path)
    (port,) = container["ports"]
    assert listen_port(config) == port["containerPort"]
    assert {"path": "/ready", "port": port["name"]} == container["readinessProbe"]["httpGet"]
    assert {"path": "/ping", "port": port["name"]} == container["livenessProbe"]["httpGet"]
    (service_port,) = objects["Service"]["spec"]["ports"]
    assert port["name"] == service_port["targetPort"]
    selector = objects["Service"]["spec"]["selector"]
    assert (
        selector.items() <= objects["StatefulSet"]["spec"]["template"]["metadata"]["labels"].items()
    )


# -- Telegraf -----------------------------------------------------------------------------------


def test_telegraf_example_writes_to_the_gateway_with_a_non_empty_organization() -> None:
    """The v2 output points at the gateway's default port and sends gzip; its organization is
    not empty, since Telegraf always sends `org=` and the gateway refuses an empty one."""
    parsed = tomllib.loads(TELEGRAF.read_text())
    (output,) = parsed["outputs"]["influxdb_v2"]
    default = Config()
    assert [f"http://{default.server.listen}"] == output["urls"]
    assert output["organization"]
    assert "gzip" == output["content_encoding"]
    assert re.fullmatch(r"\$\{[A-Z_]+\}", output["token"])  # from the environment, not the file
