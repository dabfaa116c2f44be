"""Wake agents for other broadcast domains: registration and heartbeats, the job queue with its
doorbell, routing of wake-only nodes by site, and the agent process itself."""
