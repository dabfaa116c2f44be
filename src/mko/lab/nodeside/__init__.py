"""Programs the lab's nodes run with their system Python (``/usr/bin/python3 -I``): standard library only.

Nothing here imports mko or a third-party package (a unit test walks the imports).

Each stand-in command (``ethtool``, ``systemctl``, ``nmcli``, ``microk8s``, ``snap``, ``shutdown``) is
a module with ``run(ctx, argv) -> exit code``; :mod:`.standin` holds what they share (the call log,
state files, power requests), :mod:`.cluster_state` the simulated MicroK8s cluster every node sees and
:mod:`.kubectl` what ``microk8s kubectl`` answers. At lab start mko.lab.nodesys copies this package into
the lab directory and writes, per node and command, a three-line launcher that imports it, so these
files are the code the nodes run (docs/lab.md, "Stand-in commands").
"""
