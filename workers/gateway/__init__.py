"""The Discord gateway process (`Procfile: gateway`, `python -m workers.gateway`).

connection.py runs one websocket session; ownership.py is the per-account Redis lease with
a fencing token; supervisor.py polls the accounts, holds leases and runs one thread per
held account. Events go to each account's Redis Stream (workers/drivers/discord_events.py),
where the discord driver follows its jobs from any worker on any host.
"""
