"""The fleet: desired state from an etcd cluster, each host's sandboxd as its node agent.

etcd holds what every node should run (unit files as TOML text) and what each node reports
(its units' status, under a lease it keeps alive). Nothing here decides placement: whoever owns
the fleet writes the keys (README "Running a fleet").

- `keys.py`: the key layout, one place;
- `gateway.py`: an asyncio client of etcd's v3 JSON gateway on aiohttp (no thread, no gRPC);
- `desired.py`: the watched keys, turned into validated units (the unit loader's parse);
- `agent.py`: the daemon's side: the watch, its reconnects, and the status reports.

`cli/commands/fleet.py` uses keys.py, gateway.py and desired.py; nothing here imports the
engine (the daemon wires the agent to the reconciler).
"""
