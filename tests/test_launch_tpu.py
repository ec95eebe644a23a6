"""launch_tpu.sh --dry-run: the gcloud commands a pod launch would run (nothing is executed)."""
import os
import shlex
import subprocess

import pytest

from tests.helpers import REPO


def _dry_run(*args: str) -> list[list[str]]:
    out = subprocess.run([os.path.join(REPO, "launch_tpu.sh"), "--dry-run", *args], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def test_all_creates_copies_installs_trains_on_every_worker_and_streams_host0():
    cmds = _dry_run("all", "--name", "vmae-h", "--zone", "us-east5-a", "--type", "v5p-64",
                    "--bucket", "b", "--config", "experiments/videomae_pretrain.py:vit_h", "--",
                    "--config.batch_size=2048")
    create = cmds[0]
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "vmae-h"]
    assert create[create.index("--accelerator-type") + 1] == "v5p-64"
    assert create[create.index("--version") + 1] == "v2-alpha-tpuv5"
    assert cmds[1][:3] == ["git", "-C", REPO] and "HEAD" in cmds[1]  # the committed code
    scp = cmds[2]
    assert scp[4] == "scp" and "--worker=all" in scp
    ssh = [c for c in cmds if c[4] == "ssh"]
    install, mount, train, logs = ssh
    assert "--worker=all" in install and "jax[tpu]==0.10.2" in install[-1]
    assert "-r requirements.txt" in install[-1]
    assert "gcsfuse --implicit-dirs b /gcs/b" in mount[-1]
    assert "--worker=all" in train
    remote = train[-1]
    assert "INTERNVIDEO_DISTRIBUTED=auto" in remote
    assert "--config experiments/videomae_pretrain.py:vit_h" in remote
    assert "--workdir /gcs/b/runs/vmae-h" in remote and "--config.batch_size=2048" in remote
    assert "--worker=0" in logs and "train.log" in logs[-1]


def test_stop_and_delete_and_missing_arguments():
    stop, = _dry_run("stop", "--name", "n", "--zone", "z")
    assert "--worker=all" in stop and "pkill -f internvideo_jax.main" in stop[-1]
    delete, = _dry_run("delete", "--name", "n", "--zone", "z", "--project", "p")
    assert delete[4:6] == ["delete", "n"] and delete[delete.index("--project") + 1] == "p"
    with pytest.raises(subprocess.CalledProcessError) as e:
        _dry_run("train", "--name", "n", "--zone", "z")
    assert "train needs --config" in e.value.stderr
    with pytest.raises(subprocess.CalledProcessError) as e:
        _dry_run("create", "--name", "n", "--zone", "z")
    assert "create needs --type" in e.value.stderr
