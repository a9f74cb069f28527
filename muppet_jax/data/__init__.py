"""The data layer: vocabulary, task metadata, preprocessors, batching and mixture inspection."""
