"""Files a lab node keeps as a real MicroK8s node would, written from the host side.

Each node's directory holds ``var-snap-microk8s/`` (bind-mounted over ``/var/snap/microk8s``) and
``logind.conf.d/`` (over ``/etc/systemd/logind.conf.d``): see ``NODE_FILE_DIRS`` in mko.lab.nodesys.
Commands run over SSH (``cat``, ``grep``) therefore read them at the real paths:

* ``/var/snap/microk8s/current/args/kubelet``: MicroK8s' default kubelet arguments (copied from
  canonical/microk8s ``microk8s-resources/default-args/kubelet``, without ``--container-runtime``, which
  kubelet 1.27 removed), which name no ``--config``: graceful node shutdown is off, as on a fresh node;
* with :func:`graceful_shutdown`: a ``--config`` line and the KubeletConfiguration it names
  (``shutdownGracePeriod``, ``shutdownGracePeriodCriticalPods``), and logind's drop-in
  ``99-kubelet.conf`` with ``InhibitDelayMaxSec``, as kubelet writes it when it starts
  (kubernetes pkg/kubelet/nodeshutdown/systemd);
* with :func:`login_user` and :func:`sudoers`: a non-root login of the node's own (its ``/etc/passwd``,
  ``group`` and ``shadow`` are copies of the host's, bind-mounted) and its rule in ``/etc/sudoers.d``,
  read by the host's real sudo (1.9) when mko runs ``sudo -n`` over SSH.
"""

from __future__ import annotations

from pathlib import Path

from mko.lab.nodesys import NodeSystem

__all__ = ["KUBELET_CONFIG", "default_kubelet_args", "graceful_shutdown", "login_user", "sudoers"]

KUBELET_CONFIG = "${SNAP_DATA}/args/kubelet-config.yaml"

_DEFAULT_ARGS = """\
--kubeconfig=${SNAP_DATA}/credentials/kubelet.config
--cert-dir=${SNAP_DATA}/certs
--client-ca-file=${SNAP_DATA}/certs/ca.crt
--anonymous-auth=false
--root-dir=${SNAP_COMMON}/var/lib/kubelet
--log-dir=${SNAP_COMMON}/var/log
--fail-swap-on=false
--feature-gates=DevicePlugins=true
--eviction-hard="memory.available<100Mi,nodefs.available<1Gi,imagefs.available<1Gi"
--container-runtime-endpoint=${SNAP_COMMON}/run/containerd.sock
--containerd=${SNAP_COMMON}/run/containerd.sock
--node-labels="microk8s.io/cluster=true,node.kubernetes.io/microk8s-controlplane=microk8s-controlplane"
--authentication-token-webhook=true
--read-only-port=0
"""


def _args_dir(system: NodeSystem) -> Path:
    path = system.dir / "var-snap-microk8s" / "current" / "args"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_kubelet_args(system: NodeSystem) -> None:
    """Give the node MicroK8s' default ``args/kubelet`` (graceful node shutdown off), and no drop-in."""
    (_args_dir(system) / "kubelet").write_text(_DEFAULT_ARGS)
    (_args_dir(system) / "kubelet-config.yaml").unlink(missing_ok=True)
    (system.dir / "logind.conf.d" / "99-kubelet.conf").unlink(missing_ok=True)


def graceful_shutdown(
    system: NodeSystem, period: str = "30s", critical: str = "10s", inhibit_delay: int | None = 30
) -> None:
    """Configure graceful node shutdown the documented way: ``--config`` in ``args/kubelet`` naming a
    KubeletConfiguration with PERIOD and CRITICAL; logind's InhibitDelayMaxSec=INHIBIT_DELAY (None: no
    drop-in, logind keeps its default of 5 s)."""
    args = _args_dir(system)
    (args / "kubelet").write_text(_DEFAULT_ARGS + f"--config={KUBELET_CONFIG}\n")
    (args / "kubelet-config.yaml").write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\n"
        "kind: KubeletConfiguration\n"
        f"shutdownGracePeriod: {period}\n"
        f"shutdownGracePeriodCriticalPods: {critical}\n"
    )
    dropin = system.dir / "logind.conf.d" / "99-kubelet.conf"
    if inhibit_delay is None:
        dropin.unlink(missing_ok=True)
    else:
        dropin.write_text("# Kubelet logind override\n[Login]\n" + f"InhibitDelayMaxSec={inhibit_delay}\n")


def login_user(system: NodeSystem, name: str = "mko", uid: int = 2713) -> None:
    """Add a login user NAME to the node's own accounts (shell /bin/bash; the lab's client key logs in as
    any user, as sshd reads the lab's authorized_keys file). Not a sudoer until :func:`sudoers`."""
    home = system.dir / "home"
    # NOTE: sshd reads AuthorizedKeysFile as the user logging in: that user must reach the lab's
    # authorized_keys (the lab directory becomes traversable, the file readable; the private keys in
    # it stay 0600).
    system.ssh.root.chmod(system.ssh.root.stat().st_mode | 0o011)
    system.ssh.authorized_keys.chmod(0o644)
    with (system.dir / "etc-passwd").open("a") as passwd:
        passwd.write(f"{name}:x:{uid}:{uid}::{home}:/bin/bash\n")
    with (system.dir / "etc-group").open("a") as group:
        group.write(f"{name}:x:{uid}:\n")
    with (system.dir / "etc-shadow").open("a") as shadow:
        shadow.write(f"{name}:*:20000:0:99999:7:::\n")  # no password, not locked


def sudoers(system: NodeSystem, user: str, commands: list[str]) -> None:
    """Let USER run COMMANDS (full paths, sudoers syntax) as root without a password on this node."""
    rule = system.dir / "sudoers.d" / "mko"
    rule.write_text(f"{user} ALL=(root) NOPASSWD: {', '.join(commands)}\n")
    rule.chmod(0o440)  # sudo ignores a drop-in others may write
