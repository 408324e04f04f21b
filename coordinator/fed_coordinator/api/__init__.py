"""The api room: the fleet HTTP API (heartbeats in; fleet, status page and /metrics out)
and the typed fleet rows every reader shares."""
