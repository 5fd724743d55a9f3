"""``inspectd demo``: the whole product on synthetic parts, offline. It uses both the daemon and
training, so it stands beside them rather than inside either."""
