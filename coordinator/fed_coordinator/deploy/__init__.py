"""The deploy room: shipping the champion to Edge Impulse (SDK session, retrying worker)."""
