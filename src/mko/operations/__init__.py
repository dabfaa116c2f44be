"""Every power action is an operation: who asked, its steps, its result; which process and which
serve instance own it, its heartbeat, and closing what dead owners left open."""
