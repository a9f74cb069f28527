"""The 46 datasets of the Muppet catalog (filled in by the next commit)."""
