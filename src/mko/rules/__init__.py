"""Power rules: CRUD, the actions a rule can take, and the engine that turns UPS events into actions
with delay, priority, cancellation and no two actions on one cluster."""
