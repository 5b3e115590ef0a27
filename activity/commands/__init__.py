"""The `activity` command groups, one module each; ``activity.cli`` assembles them into one app."""
