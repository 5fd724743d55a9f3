"""Running the service: start-up checks, the loop around ``Pipeline.step``, signals, SIGHUP
reloads and model swaps, retention, systemd notifications and logging."""
