"""The container's contract, read from Dockerfile, .dockerignore and docker/compose.yaml.

These tests read the files; docker/test-image.sh builds and runs the image for real.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yaml"
FOLDERS = ("data", "logs", "checkpoints", "gifs", "figures")


def instructions(text):
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in text.splitlines():
        if not pending and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        if pending and line.lstrip().startswith("#"):  # comment inside a continued RUN
            continue
        logical, pending = (pending + line).strip(), ""
        if logical:
            keyword, _, arguments = logical.partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


def dockerfile():
    return instructions((ROOT / "Dockerfile").read_text())


def only(keyword, parsed=None):
    return [arguments for name, arguments in (parsed or dockerfile()) if name == keyword]


def arg_defaults(parsed):
    defaults = {}
    for arguments in only("ARG", parsed):
        name, _, value = arguments.partition("=")
        defaults.setdefault(name, value or None)
    return defaults


def pinned_tensorflow():
    text = (ROOT / "requirements.txt").read_text()
    return re.search(r"^tensorflow==(\S+)", text, re.MULTILINE).group(1)


def compose():
    yaml = pytest.importorskip("yaml", reason="PyYAML reads docker/compose.yaml: pip install -r tests/requirements.txt")
    with open(COMPOSE) as handle:
        return yaml.safe_load(handle)


def mounts(service):
    """``{container path: (host path, mode)}`` of a service's short-syntax volumes."""
    result = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target, *mode = volume.split(":")
        result[target] = ((COMPOSE.parent / source).resolve(), mode[0] if mode else "rw")
    return result


def dockerignored(path, patterns):
    """Whether Docker leaves ``path`` (relative to the context) out: the last matching rule wins."""
    excluded = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = re.escape(pattern.lstrip("!").strip("/"))
        regex = regex.replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, "/".join(parts[:end])) for end in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def dockerignore_patterns():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


# --------------------------------------------------------------------------- Dockerfile

def test_base_image_tag_is_a_build_arg():
    parsed = dockerfile()
    first_from = next(index for index, (name, _) in enumerate(parsed) if name == "FROM")
    assert re.fullmatch(r"tensorflow/tensorflow:\$\{?TF_TAG\}?", parsed[first_from][1])
    assert "TF_TAG" in arg_defaults(parsed[:first_from])


def test_default_base_tag_carries_the_tensorflow_version_requirements_pin():
    tag = arg_defaults(dockerfile())["TF_TAG"]
    assert tag.split("-")[0] == pinned_tensorflow()


def test_default_base_tag_is_the_gpu_image():
    assert arg_defaults(dockerfile())["TF_TAG"].endswith("-gpu")


def test_requirements_install_is_constrained_to_the_base_tensorflow():
    runs = [run for run in only("RUN") if "-r requirements.txt" in run]
    assert runs, "no RUN installs requirements.txt"
    for run in runs:
        constraints = re.search(r"pip install -r requirements\.txt -c (\S+)", run)
        assert constraints, run
        assert re.search(rf"pip list --format=freeze[^&]*tensorflow[^&]*> {re.escape(constraints.group(1))}", run)


def test_workdir_is_workspace():
    assert only("WORKDIR")[-1] == "/workspace"


def test_runs_as_the_build_arg_uid_and_gid():
    parsed = dockerfile()
    assert re.fullmatch(r"\$\{?USER_UID\}?:\$\{?USER_GID\}?", only("USER", parsed)[-1])


def test_default_uid_and_gid_are_not_root():
    defaults = arg_defaults(dockerfile())
    assert int(defaults["USER_UID"]) > 0 and int(defaults["USER_GID"]) > 0


def test_declares_volumes_for_data_logs_checkpoints_gifs_and_figures():
    declared = set()
    for arguments in only("VOLUME"):
        declared.update(json.loads(arguments) if arguments.startswith("[") else arguments.split())
    assert {f"/workspace/{folder}" for folder in FOLDERS} <= declared


def test_volume_folders_are_made_writable_for_the_user_before_volume():
    parsed = dockerfile()
    volume_at = next(index for index, (name, _) in enumerate(parsed) if name == "VOLUME")
    chowns = " ".join(arguments for name, arguments in parsed[:volume_at] if name == "RUN" and "chown" in arguments)
    for folder in FOLDERS:
        assert re.search(rf"chown \S*USER_UID\S*:\S*USER_GID\S* [^&]*\b{folder}\b", chowns), folder


def test_every_folder_made_for_the_user_is_a_volume():
    made = set()
    for name, arguments in dockerfile():
        for listed in re.findall(r"mkdir -p ([^&;|]+)", arguments) if name == "RUN" else []:
            made.update(f"/workspace/{folder}" for folder in listed.split())
    declared = set()
    for arguments in only("VOLUME"):
        declared.update(json.loads(arguments) if arguments.startswith("[") else arguments.split())
    assert made and made <= declared


def docker_run_lines(text):
    """Each ``docker run`` command in ``text`` (not the words in prose, as in "plain `docker run`"), continuation
    lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return re.findall(r"docker run [^`\n]*", joined)


def test_every_docker_run_in_the_readme_has_an_init_to_pass_docker_stops_sigterm_on():
    lines = docker_run_lines((ROOT / "README.md").read_text())
    assert len(lines) >= 4
    for line in lines:
        assert re.search(r"docker run (\S+ )*--init\b", line), line


def test_every_docker_run_the_dockerfile_suggests_has_an_init():
    lines = docker_run_lines((ROOT / "Dockerfile").read_text())
    assert lines
    for line in lines:
        assert re.search(r"docker run (\S+ )*--init\b", line), line


def test_exposes_tensorboard_port():
    assert "6006" in " ".join(only("EXPOSE")).split()


def test_default_command_is_exec_form_training():
    assert json.loads(only("CMD")[-1]) == ["python", "visualize_convnets.py"]


def test_no_shell_form_entrypoint_between_docker_stop_and_python():
    for entrypoint in only("ENTRYPOINT"):
        assert entrypoint.startswith("["), entrypoint


def test_copies_code_not_the_whole_context():
    for arguments in only("COPY") + only("ADD"):
        sources = arguments.split()[:-1]
        assert "." not in sources and "./" not in sources, arguments


def test_uses_no_buildkit_only_syntax():
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    assert not any(arguments.startswith("--mount") for arguments in only("RUN"))
    assert "<<" not in text


@pytest.mark.parametrize("path", ["data/images/shiba_inu_1.jpg", "logs/train/events.out", "checkpoints/checkpoint",
                                  "gifs/conv1_1.gif", "figures/pooling_demo.png", ".git/HEAD",
                                  "__pycache__/imFunctions.cpython-311.pyc", "tests/__pycache__/mirror.pyc",
                                  ".pytest_cache/v/cache", ".venv/bin/python"])
def test_dockerignore_keeps_outputs_and_caches_out_of_the_context(path):
    assert dockerignored(path, dockerignore_patterns())


@pytest.mark.parametrize("path", ["visualize_convnets.py", "imFunctions.py", "filter_gif.py", "predict.py",
                                  "run_folder.py", "tf_start.py", "cli.py", "files.py", "drawing.py", "progress.py",
                                  "resources.py", "classifier.py", "explain.py", "feature_maps.py", "feature_vis.py",
                                  "architecture.py", "augmentation.py", "curves.py", "compare_runs.py", "pretrained.py",
                                  "requirements.txt", "docker/cuda-constraints.txt", "requirements-notebook.txt",
                                  "visualizing_convnets.ipynb"])
def test_dockerignore_keeps_what_the_build_copies(path):
    assert not dockerignored(path, dockerignore_patterns())


def test_hadolint_finds_nothing():
    # pip puts hadolint beside this Python, which need not be on PATH (a venv used without activating it).
    hadolint = shutil.which("hadolint", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install -r tests/requirements.txt")
    result = subprocess.run([hadolint, "--failure-threshold", "style", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# --------------------------------------------------------------------------- compose

def test_compose_has_train_tensorboard_and_gif_services():
    assert {"train", "tensorboard", "gif"} <= set(compose()["services"])


@pytest.mark.parametrize("service", ["train", "tensorboard", "gif"])
def test_service_builds_this_repository_dockerfile(service):
    build = compose()["services"][service]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT and (context / build.get("dockerfile", "Dockerfile")).resolve() == ROOT / "Dockerfile"


def test_build_passes_host_uid_and_gid():
    arguments = compose()["services"]["train"]["build"]["args"]
    assert {"USER_UID", "USER_GID"} <= set(arguments)


def test_train_reserves_all_nvidia_gpus():
    devices = compose()["services"]["train"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", [])
               and device.get("count") == "all" for device in devices)


def test_build_defaults_to_the_dockerfiles_base_tag():
    compose_default = re.fullmatch(r"\$\{TF_TAG:-(.+)\}", compose()["services"]["train"]["build"]["args"]["TF_TAG"])
    assert compose_default and compose_default.group(1) == arg_defaults(dockerfile())["TF_TAG"]


def test_train_passes_the_shells_OXFORD_PETS_URL_on():
    assert "OXFORD_PETS_URL" in compose()["services"]["train"]["environment"]


def test_train_runs_the_training_script():
    assert compose()["services"]["train"]["command"][:2] == ["python", "visualize_convnets.py"]


def test_train_mounts_the_repository_folders_writable():
    train = mounts("train")
    for folder in FOLDERS:
        assert train[f"/workspace/{folder}"] == (ROOT / folder, "rw"), folder


def test_tensorboard_serves_the_log_volume_on_all_interfaces():
    command = compose()["services"]["tensorboard"]["command"]
    assert command[0] == "tensorboard"
    assert command[command.index("--logdir") + 1] == "/workspace/logs"
    assert "--bind_all" in command


def test_tensorboard_mounts_logs_read_only():
    assert mounts("tensorboard")["/workspace/logs"] == (ROOT / "logs", "ro")


def test_tensorboard_publishes_port_6006():
    assert "127.0.0.1:6006:6006" in published_ports("tensorboard")


def published_ports(service):
    """A compose service's published ports as compose reads them with no variable set (``${NAME:-default}``)."""
    return [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(port)) for port in compose()["services"][service].get("ports", [])]


def test_compose_publishes_every_port_on_the_hosts_127_0_0_1_by_default():
    published = [port for service in compose()["services"] for port in published_ports(service)]
    assert sorted(published) == ["127.0.0.1:6006:6006", "127.0.0.1:6007:6007", "127.0.0.1:8888:8888"]


def published_by_docker_run(text):
    return [port for line in docker_run_lines(text) for port in re.findall(r"(?:-p|--publish)[ =](\S+)", line)]


def test_every_docker_run_in_the_readme_publishes_on_the_hosts_127_0_0_1():
    published = published_by_docker_run((ROOT / "README.md").read_text())
    assert len(published) >= 3 and all(port.startswith("127.0.0.1:") for port in published), published


def test_every_docker_run_the_dockerfile_suggests_publishes_on_the_hosts_127_0_0_1():
    published = published_by_docker_run((ROOT / "Dockerfile").read_text())
    assert published and all(port.startswith("127.0.0.1:") for port in published), published


def test_the_readme_says_how_to_publish_on_every_interface_on_purpose():
    readme = (ROOT / "README.md").read_text()
    assert "PUBLISH_ADDRESS=0.0.0.0 docker compose" in readme and "`-p 6006:6006`" in readme


def test_gif_makes_gifs_from_the_checkpoint_volume():
    command = compose()["services"]["gif"]["command"]
    assert command[:2] == ["python", "filter_gif.py"]
    assert command[command.index("--checkpoint-dir") + 1] == "/workspace/checkpoints"
    assert command[command.index("--out") + 1] == "/workspace/gifs"


def test_gif_mounts_checkpoints_and_gifs():
    gif = mounts("gif")
    assert gif["/workspace/checkpoints"][0] == ROOT / "checkpoints"
    assert gif["/workspace/gifs"] == (ROOT / "gifs", "rw")


# --------------------------------------------------------------------------- the notebook

def env_defaults(parsed):
    """``{name: value}`` of the Dockerfile's ENV lines (name=value form, values possibly quoted)."""
    found = {}
    for arguments in only("ENV", parsed):
        for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', arguments):
            found[name] = value.strip('"')
    return found


def test_jupyter_is_pinned_in_its_own_requirements_file_not_in_the_scripts():
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements-notebook.txt").read_text().splitlines()]
    pins = [pin for pin in pins if pin]
    assert {"jupyterlab", "ipykernel", "nbclient"} <= {pin.split("==")[0] for pin in pins}
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", pin) for pin in pins), pins
    assert not re.search(r"^(jupyter|ipykernel|nbclient|notebook)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)


def test_the_image_installs_jupyter_within_the_scripts_pins_and_copies_the_notebook():
    assert any("-r requirements-notebook.txt" in run and "-c requirements.txt" in run for run in only("RUN"))
    assert any("visualizing_convnets.ipynb" in copy.split()[:-1] for copy in only("COPY"))


def test_notebook_serves_jupyterlab_on_port_8888_of_all_the_containers_interfaces():
    notebook = compose()["services"]["notebook"]
    assert notebook["command"][:2] == ["jupyter", "lab"]
    assert {"--ip=0.0.0.0", "--port=8888", "--no-browser"} <= set(notebook["command"])
    assert "127.0.0.1:8888:8888" in published_ports("notebook")  # the host's side: its 127.0.0.1


def test_notebook_mounts_the_same_folders_as_train():
    assert mounts("notebook") == mounts("train")


def test_notebook_takes_its_token_and_the_mirror_from_the_shell():
    assert {"JUPYTER_TOKEN", "OXFORD_PETS_URL"} <= set(compose()["services"]["notebook"]["environment"])


def test_notebook_publishes_the_port_its_inline_tensorboard_listens_on_for_all_interfaces():
    flags = env_defaults(dockerfile())["NOTEBOOK_TENSORBOARD_FLAGS"].split()
    port = flags[flags.index("--port") + 1]
    assert "--bind_all" in flags
    assert f"127.0.0.1:{port}:{port}" in published_ports("notebook")
    assert port not in [published.split(":")[1] for published in published_ports("tensorboard")]
