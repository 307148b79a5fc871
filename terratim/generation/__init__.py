"""Any-to-any generation: settings, schedules, sampling and the generation model around TerraMind."""
