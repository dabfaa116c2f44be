"""SSH to the nodes with asyncssh: host keys always verified, commands as argument lists, timeouts
everywhere."""
