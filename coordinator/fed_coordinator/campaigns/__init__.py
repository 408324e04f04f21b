"""The campaigns room: when a campaign runs (the schedule) and how one run goes (submit the
Flower App, follow its progress, register the model)."""
