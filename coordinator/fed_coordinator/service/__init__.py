"""The service room: the fed-coordinator process itself (entry point, lifecycle, main loop,
the campaign worker thread and the fedctl command queue it answers)."""
