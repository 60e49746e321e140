"""The aiohttp layer: thin views that parse requests and write answers."""
